"""Envelopes: what a frame must be before anything acts on it."""

from __future__ import annotations

import os

import msgspec
import pytest

from pouw.crypto import KeyPair, canonical_bytes
from pouw.network.messages import (
    MAX_IDS,
    PROTOCOL_VERSION,
    Body,
    Bye,
    DropMessage,
    Envelope,
    Hello,
    Inv,
    ItemKind,
    Ping,
    open_frame,
    seal,
    sign_envelope,
)
from tests.network.fakes import CHAIN

LIMIT = 1 << 20
KEY = KeyPair.from_seed(b"a")
PING = Ping(7, 3, bytes(32), 4)


def signed(envelope: Envelope, key: KeyPair = KEY, chain: str = CHAIN) -> bytes:
    """`envelope` with a valid signature by `key` (a well-behaved sender of odd content)."""
    return canonical_bytes(sign_envelope(key, chain, envelope))


def reason(frame: bytes, chain: str = CHAIN, limit: int = LIMIT) -> str:
    with pytest.raises(DropMessage) as caught:
        open_frame(frame, chain, limit)
    return caught.value.reason


@pytest.mark.parametrize(
    "body",
    [
        PING,
        Hello(CHAIN, bytes(32), 5, bytes(32), 6, "127.0.0.1", 9000, bytes(32)),
        Inv(ItemKind.BLOCK, [os.urandom(32) for _ in range(3)]),
        Bye("full", [("10.0.0.1", 9000)]),
    ],
)
def test_an_envelope_round_trips(body: Body) -> None:
    envelope, opened = open_frame(seal(KEY, CHAIN, body, 1234), CHAIN, LIMIT)
    assert opened == body
    assert envelope.sender == KEY.public_key and envelope.timestamp_ms == 1234


def test_any_change_to_a_signed_envelope_breaks_its_signature() -> None:
    frame = seal(KEY, CHAIN, PING, 1)
    envelope = msgspec.msgpack.decode(frame, type=Envelope)
    other = KeyPair.from_seed(b"b").public_key
    for change in (
        {"body": canonical_bytes(Ping(8, 3, bytes(32), 4))},
        {"sender": other},
        {"timestamp_ms": 2},
        {"type": "pong"},
    ):
        tampered = canonical_bytes(msgspec.structs.replace(envelope, **change))
        assert reason(tampered) == "bad_signature", change
    assert reason(frame, chain="another-chain") == "bad_signature"


def test_garbage_oversize_and_foreign_versions_are_refused() -> None:
    assert reason(b"\x93garbage") == "malformed"
    assert reason(b"") == "malformed"
    assert reason(os.urandom(LIMIT + 1)) == "oversized"
    frame = seal(KEY, CHAIN, PING, 1)
    assert reason(frame, limit=len(frame) - 1) == "oversized"
    future = Envelope(PROTOCOL_VERSION + 1, "ping", KEY.public_key, 1, canonical_bytes(PING))
    assert reason(signed(future)) == "bad_version"


def test_signed_but_unknown_or_ill_shaped_bodies_are_refused() -> None:
    assert reason(signed(Envelope(1, "launch_missiles", KEY.public_key, 1, b""))) == (
        "unknown_type"
    )
    wrong_shape = Envelope(1, "hello", KEY.public_key, 1, canonical_bytes(PING))
    assert reason(signed(wrong_shape)) == "malformed"
    too_many = canonical_bytes(("block", [bytes(32)] * (MAX_IDS + 1)))
    assert reason(signed(Envelope(1, "inv", KEY.public_key, 1, too_many))) == "malformed"
    short_id = canonical_bytes(("block", [bytes(31)]))
    assert reason(signed(Envelope(1, "getdata", KEY.public_key, 1, short_id))) == "malformed"
    unknown_kind = canonical_bytes(("spaceship", [bytes(32)]))
    assert reason(signed(Envelope(1, "inv", KEY.public_key, 1, unknown_kind))) == "malformed"
    bad_port = canonical_bytes(([("10.0.0.1", 70_000)],))
    assert reason(signed(Envelope(1, "peers", KEY.public_key, 1, bad_port))) == "malformed"
