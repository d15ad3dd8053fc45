from __future__ import annotations

import struct

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pouw.ml.compression import CompressedUpdate, StromCompressor


def test_residual_plus_emitted_equals_input_and_tracks_the_sum() -> None:
    generator = torch.Generator().manual_seed(1)
    compressor = StromCompressor(500, tau=0.01)
    total_in = torch.zeros(500)
    total_out = torch.zeros(500)
    for _ in range(50):
        update = 0.004 * torch.randn(500, generator=generator)
        total_in += update
        total_out += compressor.compress(update).to_dense()
        assert torch.allclose(total_out + compressor.residual, total_in, atol=1e-5)
    assert (total_in - total_out).abs().max() < 0.01 + 1e-5


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-1, 1, width=32), min_size=1, max_size=300), st.floats(0.01, 0.5))
def test_bytes_round_trip(values: list[float], tau: float) -> None:
    update = StromCompressor(len(values), tau).compress(torch.tensor(values, dtype=torch.float32))
    again = CompressedUpdate.from_bytes(update.to_bytes(), max_size=len(values))
    assert torch.equal(again.to_dense(), update.to_dense())
    assert again.to_bytes() == update.to_bytes()


def encoded(size: int, tau: float, indices: list[int], signs: bytes) -> bytes:
    header = struct.pack("<4sIIf", b"PWU1", size, len(indices), tau)
    return header + b"".join(struct.pack("<I", i) for i in indices) + signs


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"PWU", "shorter"),
        (encoded(10, 0.1, [1, 2], b"\x80"), ""),
        (encoded(10, 0.1, [2, 1], b"\x80"), "increasing"),
        (encoded(10, 0.1, [1, 1], b"\x80"), "increasing"),
        (encoded(10, 0.1, [1, 10], b"\x80"), "increasing"),
        (encoded(10, -0.1, [1], b"\x80"), "tau"),
        (encoded(10, float("nan"), [1], b"\x80"), "tau"),
        (encoded(10, 0.1, [1, 2], b""), "length"),
        (encoded(11, 0.1, [1], b"\x80"), "exceeds"),
        (b"XXXX" + encoded(10, 0.1, [1], b"\x80")[4:], "not a compressed"),
    ],
)
def test_malformed_updates_are_refused(data: bytes, message: str) -> None:
    if not message:
        assert CompressedUpdate.from_bytes(data, max_size=10).nnz == 2
        return
    with pytest.raises(ValueError, match=message):
        CompressedUpdate.from_bytes(data, max_size=10)


def test_tau_must_be_positive() -> None:
    with pytest.raises(ValueError):
        StromCompressor(3, tau=0.0)
