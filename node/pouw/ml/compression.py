"""Strom-style threshold compression of updates (Strom 2015).

Each step adds the update to a residual; every entry whose residual reaches +/-tau is sent as
its sign (the receiver applies +/-tau there) and tau is taken off the residual; the rest waits.
Over time the sum of what is sent tracks the sum of the updates within tau per coordinate.
"""

from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass

import numpy as np
import torch

_HEADER = struct.Struct("<4sIIf")
_MAGIC = b"PWU1"


@dataclass(frozen=True)
class CompressedUpdate:
    size: int
    tau: float
    indices: torch.Tensor
    signs: torch.Tensor

    @property
    def nnz(self) -> int:
        return len(self.indices)

    def to_dense(self) -> torch.Tensor:
        dense = torch.zeros(self.size, dtype=torch.float32)
        dense[self.indices.long()] = self.signs.to(torch.float32) * self.tau
        return dense

    def to_bytes(self) -> bytes:
        indices = self.indices.numpy().astype("<u4").tobytes()
        signs = np.packbits(self.signs.numpy() > 0).tobytes()
        return _HEADER.pack(_MAGIC, self.size, self.nnz, self.tau) + indices + signs

    def digest(self) -> bytes:
        return hashlib.sha256(self.to_bytes()).digest()

    @classmethod
    def from_bytes(cls, data: bytes, max_size: int) -> CompressedUpdate:
        """Decode an update from an untrusted peer, validating every field."""
        if len(data) < _HEADER.size:
            raise ValueError("compressed update is shorter than its header")
        magic, size, nnz, tau = _HEADER.unpack_from(data)
        if magic != _MAGIC:
            raise ValueError("not a compressed update")
        if size > max_size:
            raise ValueError(f"update of {size} entries exceeds the model's {max_size}")
        if not math.isfinite(tau) or tau < 0:
            raise ValueError(f"tau {tau} is not a finite non-negative number")
        sign_bytes = (nnz + 7) // 8
        if nnz > size or len(data) != _HEADER.size + 4 * nnz + sign_bytes:
            raise ValueError("compressed update length does not match its header")
        indices = np.frombuffer(data, dtype="<u4", count=nnz, offset=_HEADER.size).astype(np.int64)
        if nnz and (indices[-1] >= size or np.any(np.diff(indices) <= 0)):
            raise ValueError("indices must be strictly increasing and inside the model")
        bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8, offset=_HEADER.size + 4 * nnz))[
            :nnz
        ]
        signs = np.where(bits == 1, 1, -1).astype(np.int8)
        return cls(size, tau, torch.from_numpy(indices), torch.from_numpy(signs))


class StromCompressor:
    def __init__(self, size: int, tau: float) -> None:
        if not tau > 0:
            raise ValueError(f"tau must be positive, got {tau}")
        self.tau = tau
        self._residual = torch.zeros(size, dtype=torch.float32)

    @property
    def residual(self) -> torch.Tensor:
        return self._residual

    def compress(self, update: torch.Tensor) -> CompressedUpdate:
        residual = self._residual
        residual.add_(update)
        indices = torch.nonzero(residual.abs() >= self.tau).squeeze(1)
        signs = torch.sign(residual[indices]).to(torch.int8)
        residual.index_add_(0, indices, signs.to(torch.float32), alpha=-self.tau)
        return CompressedUpdate(len(residual), float(np.float32(self.tau)), indices, signs)
