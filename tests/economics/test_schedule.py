"""The order a miner trains its drawn tasks in: best paid per unit of work first, so a cheap
task cannot hold the miners a fairly paid one needs, and every miner ranks alike."""

from __future__ import annotations

import itertools

import msgspec

from pouw.blockchain.state import TaskRecord
from pouw.blockchain.transactions import COIN
from pouw.crypto import sha256
from pouw.economics.schedule import price, sample_cost, training_order, training_work
from pouw.spec import DatasetSpec, ModelSpec, TaskSpec, model_parameters

IRIS = TaskSpec(model=ModelSpec(layers=(4, 8, 3)), dataset=DatasetSpec(name="iris"), epochs=10)
DIGITS_CNN = TaskSpec(
    model=ModelSpec(layers=(8, 10), architecture="cnn", input_shape=(1, 8, 8)),
    dataset=DatasetSpec(name="digits"),
    epochs=10,
)


def record(name: str, spec: TaskSpec, escrow: int, height: int) -> TaskRecord:
    return TaskRecord(sha256(name.encode()), "pw" + "0" * 40, spec, escrow, height)


def test_a_cheap_huge_task_waits_behind_a_well_paid_small_one() -> None:
    cheap = record("cheap", msgspec.structs.replace(IRIS, epochs=10_000), 1, height=1)
    paid = record("paid", IRIS, 10 * COIN, height=50)
    assert training_order([cheap, paid]) == [paid, cheap]


def test_the_price_is_per_unit_of_work_not_per_task() -> None:
    small = record("small", IRIS, 10 * COIN, height=2)
    twice_the_epochs = record("long", msgspec.structs.replace(IRIS, epochs=20), 10 * COIN, 1)
    twice_paid_for_it = record("long-paid", twice_the_epochs.spec, 20 * COIN, 3)
    assert training_work(twice_the_epochs.spec) == 2 * training_work(IRIS)
    assert price(twice_paid_for_it) == price(small)
    assert training_order([twice_the_epochs, twice_paid_for_it, small]) == [
        small,  # the oldest of the two equally paid
        twice_paid_for_it,
        twice_the_epochs,
    ]


def test_a_file_dataset_costs_by_its_declared_rows() -> None:
    file = DatasetSpec(
        name="cells.npz", format="npz", sha256="0" * 64, rows=1_000, features=4, classes=3
    )
    small = msgspec.structs.replace(IRIS, dataset=file)
    large = msgspec.structs.replace(IRIS, dataset=msgspec.structs.replace(file, rows=100_000))
    assert training_work(large) > 99 * training_work(small)


def test_a_cnn_costs_its_convolutions_at_every_pixel() -> None:
    model = ModelSpec(layers=(16, 16, 10), architecture="cnn", input_shape=(1, 8, 8))
    convolutions = (1 * 16 * 9 + 16) + (16 * 16 * 9 + 16)  # their parameters, once each
    assert sample_cost(model) - model_parameters(model) == convolutions * (8 * 8 - 1)
    mlp = ModelSpec(layers=(64, 190, 10))  # about as many parameters, far less work
    assert model_parameters(mlp) >= model_parameters(model)
    assert sample_cost(mlp) * 10 < sample_cost(model)


def test_every_miner_ranks_the_same_tasks_alike() -> None:
    records = [
        record("a", IRIS, 5 * COIN, height=3),
        record("b", IRIS, 5 * COIN, height=3),  # a tie on price and age: by task id
        record("c", DIGITS_CNN, 5 * COIN, height=1),
        record("d", msgspec.structs.replace(IRIS, epochs=1), 1, height=7),
    ]
    orders = {tuple(r.task_id for r in training_order(p)) for p in itertools.permutations(records)}
    assert len(orders) == 1
