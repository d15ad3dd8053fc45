from __future__ import annotations

import stat
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from pouw.crypto import (
    KeyPair,
    address_of,
    canonical_bytes,
    hash_value,
    is_address,
    verify_signature,
)


def test_sign_and_verify() -> None:
    key = KeyPair.generate()
    signature = key.sign(b"message")
    assert verify_signature(key.public_key, signature, b"message")
    assert not verify_signature(key.public_key, signature, b"messagE")
    assert not verify_signature(KeyPair.generate().public_key, signature, b"message")
    assert not verify_signature(key.public_key[:31], signature, b"message")
    assert not verify_signature(bytes(32), signature, b"message")


def test_seeded_keys_are_deterministic_and_addresses_well_formed() -> None:
    assert KeyPair.from_seed(b"a").public_key == KeyPair.from_seed(b"a").public_key
    assert KeyPair.from_seed(b"a").address != KeyPair.from_seed(b"b").address
    key = KeyPair.from_seed(b"a")
    assert key.address == address_of(key.public_key) and is_address(key.address)
    assert not is_address("pw" + "g" * 40) and not is_address(key.address[:-1])


@given(st.dictionaries(st.text(max_size=8), st.integers(-(2**63), 2**63 - 1), max_size=8))
def test_canonical_encoding_ignores_insertion_order(mapping: dict[str, int]) -> None:
    reordered = dict(reversed(list(mapping.items())))
    assert canonical_bytes(mapping) == canonical_bytes(reordered)
    assert hash_value(mapping) == hash_value(reordered)


def test_saved_key_is_owner_only_and_loads_back(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "node.key"
    key = KeyPair.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert KeyPair.load_or_create(path).public_key == key.public_key
