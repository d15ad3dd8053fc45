import numpy as np
import torch
from hypothesis import given
from hypothesis import strategies as st

from pouw.ml.iteration import ModelFingerprint, SamplingPlan


@given(
    sizes=st.lists(st.integers(min_value=1, max_value=5000), min_size=1, max_size=6),
    samples=st.sampled_from([16, 256, 1024]),
    run=st.sampled_from([4, 64, 256]),
)
def test_a_plan_reads_evenly_spread_runs_of_the_concatenation(
    sizes: list[int], samples: int, run: int
) -> None:
    total = sum(sizes)
    positions = np.arange(total, dtype=np.float32)  # each value is its own global index
    arrays = np.split(positions, np.cumsum(sizes)[:-1])
    plan = SamplingPlan([torch.Size([size]) for size in sizes], samples, run)
    got = np.frombuffer(plan.sample(arrays), dtype=np.float32).astype(np.int64)
    if total <= samples:
        assert got.tolist() == list(range(total))
        return
    run = min(run, samples)
    runs = got.reshape(-1, run)
    assert len(runs) == samples // run
    assert all((np.diff(r) == 1).all() for r in runs)
    assert runs[0][0] == 0
    if len(runs) > 1:
        assert runs[-1][-1] == total - 1
        assert (np.diff(runs[:, 0]) >= run).all()


def test_the_fingerprint_follows_in_place_updates_and_gradients() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(40, 30), torch.nn.Linear(30, 2))
    fingerprint = ModelFingerprint(model, samples=64)
    before = fingerprint.parameters_sample()
    assert fingerprint.gradients_sample() == bytes(len(before))  # no gradients yet: zeros
    model(torch.randn(5, 40)).sum().backward()
    assert fingerprint.gradients_sample() != bytes(len(before))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(1.0)
    after = np.frombuffer(fingerprint.parameters_sample(), dtype=np.float32)
    assert np.allclose(after, np.frombuffer(before, dtype=np.float32) + 1.0)
