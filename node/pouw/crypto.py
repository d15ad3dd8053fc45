"""Keys, addresses, and the one canonical encoding and hash used by every signed structure.

Signatures are ed25519 (`cryptography`); hashes are SHA-256; the canonical encoding is msgpack
produced by msgspec with struct fields as arrays in declaration order and map keys sorted, so
equal values always encode to equal bytes.

Every signature is made by kind (`SignedKind`): the signed bytes are
`SIGNED_PREFIX + canonical((kind, chain_id)) + body`, so a signature made for one kind of
statement (a hello, an envelope, an IT_RES, a block...) never verifies as another, nor on
another chain.
"""

from __future__ import annotations

import hashlib
import os
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

HASH_SIZE: Final = 32
PUBLIC_KEY_SIZE: Final = 32
SIGNATURE_SIZE: Final = 64
ADDRESS_PREFIX: Final = "pw"
ZERO_HASH: Final = bytes(HASH_SIZE)

_encoder = msgspec.msgpack.Encoder(order="deterministic")


def canonical_bytes(value: Any) -> bytes:
    """The canonical msgpack encoding of a value (structs, lists, dicts, scalars)."""
    return _encoder.encode(value)


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def hash_value(value: Any) -> bytes:
    """SHA-256 of the canonical encoding: the one way a structure is hashed."""
    return hashlib.sha256(_encoder.encode(value)).digest()


def hash_concat(*parts: bytes) -> bytes:
    return hashlib.sha256(b"".join(parts)).digest()


def address_of(public_key: bytes) -> str:
    """A short, typo-evident account name: prefix + hex of the first 20 bytes of H(key)."""
    return ADDRESS_PREFIX + hashlib.sha256(public_key).digest()[:20].hex()


def is_address(value: str) -> bool:
    if len(value) != len(ADDRESS_PREFIX) + 40 or not value.startswith(ADDRESS_PREFIX):
        return False
    try:
        bytes.fromhex(value[len(ADDRESS_PREFIX) :])
    except ValueError:
        return False
    return True


_public_keys: dict[bytes, Ed25519PublicKey] = {}
_PUBLIC_KEY_CACHE_LIMIT: Final = 65_536


def _load_public_key(public_key: bytes) -> Ed25519PublicKey:
    key = _public_keys.get(public_key)
    if key is None:
        key = Ed25519PublicKey.from_public_bytes(public_key)
        if len(_public_keys) >= _PUBLIC_KEY_CACHE_LIMIT:
            _public_keys.clear()
        _public_keys[public_key] = key
    return key


class SignedKind(StrEnum):
    """What a signature is for: each kind is its own domain."""

    TRANSACTION = "transaction"
    BLOCK = "block"
    ITERATION = "iteration"
    """One IT_RES record: its message and the hash of its update."""
    ITERATION_BATCH = "iteration_batch"
    FINAL_MODEL = "final_model"
    VERDICT = "verdict"
    ENVELOPE = "envelope"
    """Every peer-to-peer frame."""
    HELLO = "hello"
    """The answer to a peer's handshake challenge, bound to this link (docs/protocol.md 7.4)."""


SIGNED_PREFIX: Final = b"pouw-signed-v1\x00"


def signed_bytes(kind: SignedKind, chain_id: str, body: bytes) -> bytes:
    """What a signature of `kind` on `chain_id` over `body` signs: the msgpack array of kind
    and chain id delimits itself, so no (kind, chain, body) triple shares bytes with another."""
    return SIGNED_PREFIX + _encoder.encode((kind.value, chain_id)) + body


def verify_as(
    kind: SignedKind, chain_id: str, public_key: bytes, signature: bytes, body: bytes
) -> bool:
    """True when `signature` is `public_key`'s signature of `body` as a `kind` on `chain_id`."""
    return _verify(public_key, signature, signed_bytes(kind, chain_id, body))


def _verify(public_key: bytes, signature: bytes, message: bytes) -> bool:
    if len(public_key) != PUBLIC_KEY_SIZE or len(signature) != SIGNATURE_SIZE:
        return False
    try:
        _load_public_key(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


class KeyPair:
    """An ed25519 signing key and its public half."""

    __slots__ = ("_private", "address", "public_key")

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private = private_key
        self.public_key: bytes = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.address: str = address_of(self.public_key)

    @classmethod
    def generate(cls) -> KeyPair:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> KeyPair:
        """A deterministic key from any seed bytes (devnet accounts, tests)."""
        return cls(Ed25519PrivateKey.from_private_bytes(sha256(b"pouw-key-seed" + seed)))

    def private_bytes(self) -> bytes:
        return self._private.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )

    def sign_as(self, kind: SignedKind, chain_id: str, body: bytes) -> bytes:
        """The signature of `body` as a statement of `kind` on `chain_id` (the only way this
        key signs)."""
        return self._private.sign(signed_bytes(kind, chain_id, body))

    def save(self, path: Path) -> None:
        """Write the raw private key, readable by the owner only."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(self.private_bytes())
            file.flush()
            os.fsync(file.fileno())

    @classmethod
    def load(cls, path: Path) -> KeyPair:
        raw = path.read_bytes()
        if len(raw) != 32:
            raise ValueError(f"{path} is not a raw 32-byte ed25519 private key")
        return cls(Ed25519PrivateKey.from_private_bytes(raw))

    @classmethod
    def load_or_create(cls, path: Path) -> KeyPair:
        if path.exists():
            return cls.load(path)
        key = cls.generate()
        key.save(path)
        return key

    def __repr__(self) -> str:
        return f"KeyPair(address={self.address!r})"
