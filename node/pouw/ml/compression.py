"""Strom-style threshold compression of updates (Strom 2015).

Each step adds the update to a residual; every entry whose residual reaches +/-tau is sent as
its sign (the receiver applies +/-tau there) and tau is taken off the residual; the rest waits.
While no update entry exceeds tau in magnitude the residual stays below tau, so the sum of what
is sent tracks the sum of the updates within tau per coordinate.
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

# magic, size, nnz, tau; then nnz little-endian uint32 indices, then the signs as a bitmask
# (bit set = +1, most significant bit first, padding bits zero).
_HEADER = struct.Struct("<4sIIf")
_MAGIC = b"PWU1"


@dataclass(frozen=True)
class CompressedUpdate:
    """A sparse update: +/-tau at the sorted `indices` of a dense vector of `size` entries."""

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
        indices = self.indices.cpu().numpy().astype("<u4").tobytes()
        signs = np.packbits(self.signs.cpu().numpy() > 0).tobytes()
        return _HEADER.pack(_MAGIC, self.size, self.nnz, self.tau) + indices + signs

    def digest(self) -> bytes:
        return hashlib.sha256(self.to_bytes()).digest()

    @classmethod
    def from_bytes(cls, data: bytes, max_size: int) -> CompressedUpdate:
        """Decode an update from an untrusted peer; only the canonical encoding is accepted."""
        if len(data) < _HEADER.size:
            raise ValueError("compressed update is shorter than its header")
        magic, size, nnz, tau = _HEADER.unpack_from(data)
        if magic != _MAGIC:
            raise ValueError("not a compressed update")
        if size > max_size:
            raise ValueError(f"update of {size} entries exceeds the model's {max_size}")
        if not math.isfinite(tau) or math.copysign(1.0, tau) < 0:
            raise ValueError(f"tau {tau} is not a finite non-negative number")
        sign_offset = _HEADER.size + 4 * nnz
        if nnz > size or len(data) != sign_offset + (nnz + 7) // 8:
            raise ValueError("compressed update length does not match its header")
        indices = np.frombuffer(data, dtype="<u4", count=nnz, offset=_HEADER.size).astype(np.int64)
        if nnz and (indices[-1] >= size or np.any(np.diff(indices) <= 0)):
            raise ValueError("indices must be strictly increasing and inside the model")
        bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8, offset=sign_offset))
        if bits[nnz:].any():
            raise ValueError("sign padding bits must be zero")
        signs = np.where(bits[:nnz] == 1, 1, -1).astype(np.int8)
        return cls(size, tau, torch.from_numpy(indices), torch.from_numpy(signs))


_CHUNK = 1 << 16  # residual entries thresholded per pass: a few L2-sized buffers


class StromCompressor:
    """Keeps one sender's residual; tau is rounded to float32, as it travels.

    It runs on the miner's pipeline thread next to training, on the other core, and every
    pass over memory there slows training down: updates are added in place with torch's fused
    `add_(alpha=)` (one pass, no temporary), and thresholded with numpy over cache-sized
    chunks with reused scratch buffers.
    """

    def __init__(self, size: int, tau: float) -> None:
        tau32 = np.float32(tau)
        if not (math.isfinite(tau32) and tau32 > 0):
            raise ValueError(f"tau must be a positive finite float32, got {tau}")
        self.tau = float(tau32)
        self._tau32 = tau32
        self._residual = np.zeros(size, dtype=np.float32)
        self._scratch = np.empty(min(size, _CHUNK), dtype=np.float32)
        self._mask = np.empty(min(size, _CHUNK), dtype=np.bool_)

    @property
    def residual(self) -> torch.Tensor:
        return torch.from_numpy(self._residual)

    def compress(self, update: torch.Tensor) -> CompressedUpdate:
        if update.shape != self._residual.shape:
            raise ValueError(f"update shape {tuple(update.shape)} != {tuple(self._residual.shape)}")
        if not bool(torch.isfinite(update).all()):
            raise ValueError("update has non-finite entries")
        self._residual += update.detach().cpu().numpy()
        return self._emit()

    def compress_parts(self, parts: Sequence[torch.Tensor], scale: float) -> CompressedUpdate:
        """Compress `scale * concat(parts)` without building the concatenation. The parts are
        the caller's own, known finite (the miner stops on a non-finite loss), so they are
        not scanned again."""
        sizes = [part.numel() for part in parts]
        if sum(sizes) != len(self._residual):
            raise ValueError(f"parts hold {sum(sizes)} values, the residual {len(self._residual)}")
        residual = torch.from_numpy(self._residual)
        offset = 0
        for part, size in zip(parts, sizes, strict=True):
            residual[offset : offset + size].add_(part.detach().reshape(-1), alpha=scale)
            offset += size
        return self._emit()

    def _emit(self) -> CompressedUpdate:
        residual, tau = self._residual, self._tau32
        found: list[np.ndarray] = []
        for low in range(0, len(residual), _CHUNK):
            chunk = residual[low : low + _CHUNK]
            scratch, mask = self._scratch[: len(chunk)], self._mask[: len(chunk)]
            np.abs(chunk, out=scratch)
            np.greater_equal(scratch, tau, out=mask)
            hits = np.flatnonzero(mask)
            if len(hits):
                found.append(hits + low)
        indices = np.concatenate(found) if found else np.empty(0, dtype=np.int64)
        signs = np.sign(residual[indices]).astype(np.int8)
        residual[indices] -= signs.astype(np.float32) * tau
        return CompressedUpdate(
            len(residual), self.tau, torch.from_numpy(indices), torch.from_numpy(signs)
        )
