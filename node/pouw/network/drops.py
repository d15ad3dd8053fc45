"""Why the network drops a frame, and what each reason costs the peer that sent it.

A reason is the label of pouw_messages_dropped_total{reason}. Its ban points are added to the
sending link's ban score; 0 marks a reason that is not the peer's fault (counted, never
scored). Items and sync batches the node rejects carry the node's own reason (ItemResult.reason,
e.g. "loss_mismatch"): that string is the label as it is, and costs ITEM_REJECTION_SCORE unless
it names one of the reasons below.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

ITEM_REJECTION_SCORE: Final = 25.0
"""An item or sync batch the handler rejected (bad work, bad signature, ...): four in a row
and the peer is gone; honest races (stale nonce, known block) come back KNOWN, not REJECTED."""


class DropReason(StrEnum):
    ban_points: float

    def __new__(cls, label: str, ban_points: float = 0.0) -> DropReason:
        reason = str.__new__(cls, label)
        reason._value_ = label
        reason.ban_points = ban_points
        return reason

    OVERSIZED = "oversized", 50
    MALFORMED = "malformed", 20
    BAD_SIGNATURE = "bad_signature", 50
    BAD_VERSION = "bad_version", 10
    UNKNOWN_TYPE = "unknown_type", 10
    WRONG_CHAIN = "wrong_chain", 100
    IMPERSONATION = "impersonation", 100
    BAD_HANDSHAKE = "bad_handshake", 50
    """A hello whose answer does not sign the challenge we sent on this link, for us, with
    the sender's key: a hello replayed or relayed from another link."""
    RATE_LIMITED = "rate_limited", 2
    STALE = "stale", 2
    UNSOLICITED = "unsolicited", 1
    NO_HELLO = "no_hello", 1
    SLOW_READER = "slow_reader", 100
    """More than NetworkSettings.max_queued_bytes queued to the peer unread: it asks and does
    not read the answers (amplification), so it is dropped and banned."""
    REJECTED = "rejected", ITEM_REJECTION_SCORE
    """The node rejected an item without naming the rule it broke."""

    # Not the peer's fault:
    BANNED = "banned"
    OVERLOADED = "overloaded"
    HANDLER_ERROR = "handler_error"
    TOO_MANY_LINKS = "too_many_links"
    PARTITIONED = "partitioned"
    SEND_FAILED = "send_failed"
    OUTBOUND_FULL = "outbound_full"
    """All peers together have max_queued_bytes_total unread: the frame is not sent."""
    REPEATED_GETDATA = "repeated_getdata"
    """Items asked for again within SERVE_AGAIN_AFTER_S of being sent: not sent again."""
    TOO_LARGE = "too_large"
    """An item of ours too large to gossip."""


def ban_points(reason: str) -> float:
    """The points `reason` costs: a DropReason's own, else ITEM_REJECTION_SCORE (a rule the
    node says an item broke)."""
    try:
        return DropReason(reason).ban_points
    except ValueError:
        return ITEM_REJECTION_SCORE
