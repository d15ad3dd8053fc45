from __future__ import annotations

import struct

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pouw.ml.compression import CompressedUpdate, StromCompressor

TAU = 0.01


def test_residual_plus_emitted_equals_input_and_tracks_the_sum() -> None:
    generator = torch.Generator().manual_seed(1)
    compressor = StromCompressor(500, tau=TAU)
    total_in = torch.zeros(500)
    total_out = torch.zeros(500)
    for _ in range(50):
        # Entries at most tau in magnitude keep the residual below tau.
        update = (0.006 * torch.randn(500, generator=generator)).clamp(-TAU, TAU)
        total_in += update
        total_out += compressor.compress(update).to_dense()
        assert torch.allclose(total_out + compressor.residual, total_in, rtol=0, atol=1e-5)
        assert (total_in - total_out).abs().max() < TAU + 1e-5
    assert total_out.abs().sum() > 0


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-1, 1, width=32), min_size=1, max_size=300), st.floats(0.01, 0.5))
def test_bytes_round_trip(values: list[float], tau: float) -> None:
    update = StromCompressor(len(values), tau).compress(torch.tensor(values, dtype=torch.float32))
    data = update.to_bytes()
    again = CompressedUpdate.from_bytes(data, max_size=len(values))
    assert torch.equal(again.to_dense(), update.to_dense())
    assert again.to_bytes() == data
    assert again.digest() == update.digest()


def test_encoding_is_deterministic() -> None:
    update = torch.tensor([0.5, -0.2, 0.0, -0.7, 0.3])
    first = StromCompressor(5, 0.25).compress(update)
    second = StromCompressor(5, 0.25).compress(update.clone())
    assert first.to_bytes() == second.to_bytes()
    assert first.digest() == second.digest()
    assert first.nnz == 3
    assert torch.equal(first.to_dense(), torch.tensor([0.25, 0.0, 0.0, -0.25, 0.25]))


def encoded(size: int, tau: float, indices: list[int], signs: bytes) -> bytes:
    header = struct.pack("<4sIIf", b"PWU1", size, len(indices), tau)
    return header + b"".join(struct.pack("<I", i) for i in indices) + signs


@settings(max_examples=300, deadline=None)
@given(
    st.integers(8, 12),
    st.sets(st.integers(0, 12), max_size=8),
    st.sampled_from([0.0, 0.5, 3.0, -0.0, -1.0, float("nan")]),
    st.integers(0, 255),
    st.booleans(),
)
def test_any_accepted_bytes_are_canonical(
    size: int, indices: set[int], tau: float, sign_byte: int, clear_padding: bool
) -> None:
    # Mostly well-formed, with some indices past the end and sometimes stray padding bits.
    if clear_padding:
        sign_byte &= (0xFF00 >> len(indices)) & 0xFF
    data = encoded(size, tau, sorted(indices), bytes([sign_byte] * min(len(indices), 1)))
    try:
        decoded = CompressedUpdate.from_bytes(data, max_size=64)
    except ValueError:
        return
    assert decoded.to_bytes() == data
    assert torch.count_nonzero(decoded.to_dense()) == (decoded.nnz if tau else 0)


def test_a_well_formed_encoding_decodes() -> None:
    decoded = CompressedUpdate.from_bytes(encoded(10, 0.5, [1, 4], b"\x80"), max_size=10)
    assert decoded.nnz == 2
    assert torch.equal(decoded.to_dense()[[1, 4]], torch.tensor([0.5, -0.5]))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "shorter"),
        (encoded(10, 0.1, [1, 2], b"\x80")[:-3], "length"),
        (encoded(10, 0.1, [1, 2], b""), "length"),
        (encoded(10, 0.1, [1, 2], b"\x80\x00"), "length"),
        (encoded(11, 0.1, [1], b"\x80"), "exceeds"),
        (encoded(10, 0.1, [2, 1], b"\x80"), "increasing"),
        (encoded(10, 0.1, [1, 1], b"\x80"), "increasing"),
        (encoded(10, 0.1, [1, 10], b"\x80"), "increasing"),
        (encoded(10, -0.1, [1], b"\x80"), "tau"),
        (encoded(10, float("nan"), [1], b"\x80"), "tau"),
        (encoded(10, float("inf"), [1], b"\x80"), "tau"),
        (encoded(10, 0.1, [1], b"\x81"), "padding"),
        (b"XXXX" + encoded(10, 0.1, [1], b"\x80")[4:], "not a compressed"),
    ],
    ids=[
        "empty",
        "truncated",
        "missing-signs",
        "trailing-bytes",
        "too-large",
        "unsorted",
        "duplicate",
        "out-of-range",
        "negative-tau",
        "nan-tau",
        "inf-tau",
        "padding-bits",
        "bad-magic",
    ],
)
def test_malformed_updates_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CompressedUpdate.from_bytes(data, max_size=10)


@pytest.mark.parametrize("tau", [0.0, -0.1, float("nan"), float("inf"), 1e-50])
def test_tau_must_be_positive_and_finite(tau: float) -> None:
    with pytest.raises(ValueError, match="tau"):
        StromCompressor(3, tau=tau)


def test_compress_rejects_bad_updates() -> None:
    compressor = StromCompressor(3, tau=0.1)
    with pytest.raises(ValueError, match="shape"):
        compressor.compress(torch.zeros(4))
    with pytest.raises(ValueError, match="non-finite"):
        compressor.compress(torch.tensor([0.0, float("nan"), 0.0]))
    assert torch.equal(compressor.residual, torch.zeros(3))


def test_compressing_parts_equals_compressing_their_scaled_concatenation() -> None:
    generator = torch.Generator().manual_seed(3)
    parts = [torch.randn(4, 5, generator=generator), torch.randn(7, generator=generator)]
    whole, split = StromCompressor(27, tau=0.05), StromCompressor(27, tau=0.05)
    for _ in range(3):
        expected = whole.compress(torch.cat([p.reshape(-1) for p in parts]) * -0.1)
        got = split.compress_parts(parts, -0.1)
        assert got.to_bytes() == expected.to_bytes()
    assert torch.allclose(whole.residual, split.residual, atol=1e-6)
    with pytest.raises(ValueError, match="parts hold"):
        split.compress_parts([torch.zeros(3)], 1.0)
