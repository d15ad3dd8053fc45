"""A task's initial model is a function of its seed alone, whatever else the process does."""

import hashlib
import threading

import torch

from pouw.ml.models import build_model, model_to_bytes
from pouw.spec import ModelSpec

MLP = ModelSpec(layers=(64, 32, 10))
CNN = ModelSpec(architecture="cnn", layers=(4, 10), input_shape=(1, 8, 8))


def _digest(spec: ModelSpec, seed: bytes) -> str:
    return hashlib.sha256(model_to_bytes(build_model(spec, seed=seed))).hexdigest()


def test_the_same_seed_builds_the_same_weights_whatever_the_global_seed() -> None:
    torch.manual_seed(1)
    first = _digest(MLP, b"task")
    torch.manual_seed(2)
    assert _digest(MLP, b"task") == first
    assert _digest(MLP, b"other task") != first


def test_building_neither_reads_nor_moves_the_global_generator() -> None:
    torch.manual_seed(7)
    before = torch.get_rng_state()
    build_model(CNN, seed=b"task")
    assert torch.equal(torch.get_rng_state(), before)


def test_threads_building_at_once_all_get_the_task_s_weights() -> None:
    # Several miners in one process (the seed's multi-node example) build the same task's
    # model while other threads draw from the global generator.
    expected = {_digest(MLP, b"task"), _digest(CNN, b"task")}
    seen: set[str] = set()
    stop = threading.Event()

    def build() -> None:
        for _ in range(40):
            seen.add(_digest(MLP, b"task"))
            seen.add(_digest(CNN, b"task"))

    def disturb() -> None:
        while not stop.is_set():
            torch.manual_seed(int.from_bytes(hashlib.sha256(b"x").digest()[:4], "big"))
            torch.rand(64)

    disturber = threading.Thread(target=disturb)
    disturber.start()
    builders = [threading.Thread(target=build) for _ in range(4)]
    for thread in builders:
        thread.start()
    for thread in builders:
        thread.join()
    stop.set()
    disturber.join()
    assert seen == expected
