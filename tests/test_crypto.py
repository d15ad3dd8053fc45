from __future__ import annotations

import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pouw.crypto import (
    KeyPair,
    SignedKind,
    address_of,
    canonical_bytes,
    hash_value,
    is_address,
    verify_as,
)

TX = SignedKind.TRANSACTION


def test_sign_and_verify() -> None:
    key = KeyPair.generate()
    signature = key.sign_as(TX, "c", b"message")
    assert verify_as(TX, "c", key.public_key, signature, b"message")
    assert not verify_as(TX, "c", key.public_key, signature, b"messagE")
    assert not verify_as(TX, "c", KeyPair.generate().public_key, signature, b"message")
    assert not verify_as(TX, "c", key.public_key[:31], signature, b"message")
    assert not verify_as(TX, "c", bytes(32), signature, b"message")
    assert not verify_as(TX, "other-chain", key.public_key, signature, b"message")


@pytest.mark.parametrize("signed_as", list(SignedKind))
@pytest.mark.parametrize("presented_as", list(SignedKind))
def test_a_signature_of_one_kind_verifies_as_no_other(
    signed_as: SignedKind, presented_as: SignedKind
) -> None:
    key = KeyPair.from_seed(b"signer")
    signature = key.sign_as(signed_as, "pouw-test", b"the same body")
    verified = verify_as(presented_as, "pouw-test", key.public_key, signature, b"the same body")
    assert verified == (signed_as == presented_as)


def test_kind_and_chain_cannot_be_shifted_into_the_body() -> None:
    key = KeyPair.from_seed(b"signer")
    signature = key.sign_as(TX, "a", b"\x00b")
    assert not verify_as(TX, "a\x00b", key.public_key, signature, b"")


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
