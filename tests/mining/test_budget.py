from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pouw.mining.budget import derive_nonce, node_budget, nonce_budget, nonce_index


def test_budget_formula_and_floor_of_one() -> None:
    assert nonce_budget(1e-3, 1e-5, 256, 1_100_000) == 11
    assert nonce_budget(0.0, 0.0, 256, 10**9) == 1
    assert nonce_budget(1e-4, 1e-6, 100, 17_000) == 1


def test_node_budget_spends_a_fraction_but_at_least_one() -> None:
    assert node_budget(11, 1.0) == 11
    assert node_budget(11, 0.5) == 5
    assert node_budget(11, 0.00001) == 1
    assert node_budget(11, 7.0) == 11


@given(st.binary(min_size=32, max_size=32), st.integers(0, 50))
def test_nonces_are_derived_and_found_again(precursor: bytes, index: int) -> None:
    nonce = derive_nonce(precursor, index)
    assert 0 <= nonce < 2**63
    assert nonce_index(precursor, nonce, 51) is not None
    assert (
        nonce_index(precursor, nonce, index) is None
        or derive_nonce(precursor, index) != nonce
        or index == 0
    )
