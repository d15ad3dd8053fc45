"""Peer bookkeeping without sockets: rate limits, ban scores, bans, addresses, fetch requests."""

from __future__ import annotations

import time

from pouw.network.drops import ITEM_REJECTION_SCORE, DropReason, ban_points
from pouw.network.messages import ItemKind
from pouw.network.peers import (
    WRITTEN,
    AddressBook,
    BanList,
    BanScore,
    BoundedSet,
    Link,
    TokenBucket,
)
from pouw.network.relay import ItemRelay


def link(name: str) -> Link:
    peer = Link("out", lambda frame: WRITTEN, TokenBucket(1, 1), BanScore(0))
    peer.peer_key = name.encode().ljust(32, b"\0")
    return peer


def test_a_token_bucket_allows_its_burst_then_its_rate() -> None:
    bucket = TokenBucket(rate_per_s=10, burst=5, updated=100.0)
    assert [bucket.take(100.0) for _ in range(6)] == [True] * 5 + [False]
    assert bucket.take(100.05) is False  # half a token
    assert bucket.take(100.11) is True
    assert sum(bucket.take(200.0) for _ in range(10)) == 5  # never more than the burst


def test_ban_scores_add_up_and_fade() -> None:
    score = BanScore(decay_per_s=1.0, updated=0.0)
    assert score.add(50, now=0.0) == 50
    assert score.add(50, now=10.0) == 90
    assert score.current(now=100.0) == 0.0
    assert ban_points("bad_signature") > ban_points("rate_limited") > 0
    assert ban_points("overloaded") == 0  # our trouble, not the peer's
    assert ban_points("some_rule_the_handler_names") == 25


def test_drop_reasons_cost_what_they_did_as_free_strings() -> None:
    """The ban points of every reason the network names (the metric labels), and of the
    reasons the node gives: its own rule names cost an item rejection, unless they name one
    of the network's reasons."""
    assert {reason.value: reason.ban_points for reason in DropReason} == {
        "oversized": 50,
        "malformed": 20,
        "bad_signature": 50,
        "bad_version": 10,
        "unknown_type": 10,
        "wrong_chain": 100,
        "impersonation": 100,
        "bad_handshake": 50,
        "rate_limited": 2,
        "stale": 2,
        "unsolicited": 1,
        "no_hello": 1,
        "slow_reader": 100,
        "rejected": 25,
        "banned": 0,
        "overloaded": 0,
        "handler_error": 0,
        "too_many_links": 0,
        "partitioned": 0,
        "send_failed": 0,
        "outbound_full": 0,
        "repeated_getdata": 0,
        "too_large": 0,
    }
    assert ban_points("loss_mismatch") == ban_points("bad_item") == ITEM_REJECTION_SCORE
    assert ban_points("malformed") == ban_points(DropReason.MALFORMED) == 20  # a node's too
    assert f"{DropReason.UNSOLICITED}" == str(DropReason.UNSOLICITED) == "unsolicited"


def test_bans_run_out() -> None:
    bans = BanList(seconds=0.05)
    bans.ban(b"key", ("10.0.0.1", 1), None)
    assert bans.banned(b"key") and bans.banned(("10.0.0.1", 1))
    assert not bans.banned(None) and not bans.banned(b"other")
    time.sleep(0.06)
    assert not bans.banned(b"key")


def test_the_address_book_backs_off_keeps_bootstraps_and_stays_bounded() -> None:
    book = AddressBook(limit=3, max_backoff_s=8, max_failures=2)
    boot, learnt = ("boot", 1), ("peer", 2)
    book.add(boot, bootstrap=True)
    book.add(learnt)
    book.add(("0.0.0.0", 3))  # an unspecified host cannot be dialled
    book.add(("peer", 0))
    assert len(book) == 2 and book.due(now=0.0)[0] == boot
    book.failed(boot, now=0.0)
    assert boot not in book.due(now=0.5) and boot in book.due(now=1.5)
    for _ in range(10):
        book.failed(boot, now=0.0)
    assert boot in book and boot in book.due(now=10.0)  # bootstrap: capped, never dropped
    for _ in range(3):
        book.failed(learnt, now=0.0)
    assert learnt not in book  # learnt: forgotten after repeated failures
    for port in range(10, 20):
        book.add(("peer", port))
    assert len(book) == 3 and boot in book
    book.never(boot)
    book.add(boot, bootstrap=True)
    assert boot not in book


def test_a_bounded_set_forgets_the_oldest() -> None:
    seen: BoundedSet[int] = BoundedSet(3)
    for number in range(5):
        seen.add(number)
    assert len(seen) == 3 and 0 not in seen and 4 in seen


def test_an_item_is_asked_of_one_peer_then_of_the_next_announcer() -> None:
    relay = ItemRelay(cache_items=10, cache_bytes=100, seen_items=10)
    key = (ItemKind.TX, bytes(32))
    first, second, third = link("first"), link("second"), link("third")
    assert relay.should_fetch(key, first, now=0.0)
    assert not relay.should_fetch(key, second, now=0.1)  # remembered as a fallback
    assert not relay.should_fetch(key, third, now=0.2)
    assert not relay.arrived(key, second)  # we did not ask it: unsolicited
    assert relay.retry(now=0.5, timeout_s=1.0) == []
    assert relay.retry(now=1.5, timeout_s=1.0) == [(key, second)]
    third.closed = True  # gone: skipped
    assert relay.retry(now=3.0, timeout_s=1.0) == []
    assert key not in relay.requests  # nobody left: a later inv fetches it again
    assert relay.should_fetch(key, third, now=4.0)
    assert relay.arrived(key, third)
    relay.remember(key, b"payload")
    assert not relay.should_fetch(key, first, now=5.0)


def test_an_item_waiting_to_be_imported_is_not_fetched_again() -> None:
    """Between its arrival and the node's verdict an item is neither asked for nor seen: an
    inv from another peer then must not fetch it a second time."""
    relay = ItemRelay(cache_items=10, cache_bytes=100, seen_items=10)
    key = (ItemKind.TX, bytes(32))
    first, second = link("first"), link("second")
    assert relay.should_fetch(key, first, now=0.0) and relay.arrived(key, first)
    assert not relay.should_fetch(key, second, now=0.1)
    relay.defer(key, second)
    assert relay.take_deferred(10) == []
    relay.imported(key)  # rejected, say: neither seen nor remembered
    assert relay.should_fetch(key, second, now=0.2)


def test_deferred_announcements_come_back_oldest_first_while_their_peer_is_there() -> None:
    relay = ItemRelay(cache_items=10, cache_bytes=100, seen_items=10)
    first, gone = link("first"), link("gone")
    keys = [(ItemKind.TX, bytes([n]) * 32) for n in range(4)]
    for key in keys:
        relay.defer(key, gone if key == keys[1] else first)
    relay.defer(keys[0], gone)  # announced again: still one entry, the first announcer
    gone.closed = True
    relay.seen.add(keys[2])
    assert relay.take_deferred(1) == [(keys[0], first)]
    assert relay.take_deferred(10) == [(keys[3], first)] and not relay.deferred


def test_the_payload_cache_is_bounded_by_bytes() -> None:
    relay = ItemRelay(cache_items=100, cache_bytes=100, seen_items=100)
    keys = [(ItemKind.BLOCK, bytes([n]) * 32) for n in range(5)]
    for key in keys:
        relay.remember(key, bytes(40))
    assert relay.payload(keys[0]) is None and relay.payload(keys[-1]) == bytes(40)
    assert all(key in relay.seen for key in keys)
