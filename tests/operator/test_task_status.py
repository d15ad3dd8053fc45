"""The pure MLTask mapping: spec -> POST /tasks body, task view -> status, ApiError -> reason."""

from __future__ import annotations

from typing import Any

import pytest

from pouw.api.client import ApiError
from pouw.api.schemas import TaskBody
from pouw.task_commands import task_mapping
from pouw_operator.conditions import condition
from pouw_operator.task_status import (
    SUCCEEDED,
    SYNCED,
    Failure,
    SpecError,
    backoff,
    camel_reason,
    failure_of,
    request_id,
    status_changes,
    status_from_view,
    submission,
    view_conditions,
)
from tests.operator.crd_schema import defaulted

NODE = "http://client-0.client.ns.svc:8080"
TASK_ID = "ab" * 32

SPEC: dict[str, Any] = {
    "model": {"architecture": "cnn", "layers": [64, 10], "inputShape": [1, 8, 8]},
    "dataset": {"name": "digits", "testFraction": 0.25, "splitSeed": 3},
    "optimizer": "adam",
    "hyperparameters": {"learningRate": 0.05, "batchSize": 16, "epochs": 4, "tau": 0.001},
    "minAccuracy": 0.8,
    "miners": 2,
    "aggregator": "krum",
    "reward": 12,
    "fee": 0.5,
    "networkSelector": {"matchLabels": {"team": "ml"}},
}


def test_the_spec_becomes_the_node_body() -> None:
    body = submission(SPEC, "uid-1")
    assert body.spec == {
        "model": {"architecture": "cnn", "layers": [64, 10], "input_shape": [1, 8, 8]},
        "dataset": {"name": "digits", "test_fraction": 0.25, "split_seed": 3},
        "optimizer": "adam",
        "learning_rate": 0.05,
        "batch_size": 16,
        "epochs": 4,
        "tau": 0.001,
        "min_accuracy": 0.8,
        "miners": 2,
        "aggregator": "krum",
    }
    assert (body.reward, body.fee, body.request_id) == (12.0, 0.5, "mltask-uid-1")
    assert isinstance(body.reward, float)


def test_the_operator_maps_as_pouw_task_submit_does() -> None:
    """The operator may not import pouw.task_commands; it must still agree with it."""
    for spec in (SPEC, {"model": {"layers": [4, 3]}, "dataset": {"name": "iris"}, "reward": 1}):
        body = submission(spec, "u")
        assert (body.spec, body.reward, body.fee) == task_mapping({"spec": spec})


def test_a_defaulted_manifest_is_a_valid_node_body() -> None:
    """The API server fills the CRD's defaults; the node must accept the result as is."""
    manifest = defaulted(
        "MLTask",
        {
            "apiVersion": "pouw.network/v1alpha1",
            "kind": "MLTask",
            "metadata": {"name": "t"},
            "spec": {"model": {"layers": [64, 10]}, "dataset": {"name": "digits"}, "reward": 5},
        },
    )
    body = submission(manifest["spec"], "u")
    parsed = TaskBody.model_validate(
        {**body.spec, "reward": body.reward, "fee": body.fee, "request_id": body.request_id}
    )
    assert (parsed.batch_size, parsed.epochs, parsed.miners) == (32, 10, 1)


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ({"model": {"layers": [1, 2]}, "dataset": {"name": "iris"}}, "needs a reward"),
        ({"reward": "lots"}, "must be numbers"),
        ({"reward": 1, "fee": True}, "must be numbers"),
    ],
)
def test_a_spec_without_a_usable_reward_is_a_spec_error(spec: dict[str, Any], problem: str) -> None:
    with pytest.raises(SpecError, match=problem):
        submission(spec, "u")


def test_the_request_id_is_stable_per_resource() -> None:
    assert request_id("1234") == request_id("1234") == "mltask-1234"
    assert request_id("1234") != request_id("1235")


def _view(phase: str, **fields: Any) -> dict[str, Any]:
    return {
        "task_id": TASK_ID,
        "phase": phase,
        "progress": [],
        "blocks": 0,
        "test_accuracy": None,
        "model_available": False,
        "message": "",
        **fields,
    }


PROGRESS = [
    {"miner": "pw1", "epoch": 2, "loss": 0.4, "accuracy": 0.7, "finished": False},
    {"miner": "pw2", "epoch": 5, "loss": 0.2, "accuracy": 0.9, "finished": False},
    {"miner": "pw3", "epoch": 3, "loss": None, "accuracy": None, "finished": False},
]


@pytest.mark.parametrize(
    ("view", "expected"),
    [
        (
            _view("pending", message="payment not yet in a block"),
            {"phase": "Submitted", "epoch": 0, "loss": None, "accuracy": None, "blocks": 0,
             "testAccuracy": None, "modelUrl": None, "message": "payment not yet in a block"},
        ),
        (
            _view("training", progress=PROGRESS, blocks=4, message="2 miners training"),
            {"phase": "Training", "epoch": 5, "loss": 0.2, "accuracy": 0.9, "blocks": 4,
             "testAccuracy": None, "modelUrl": None, "message": "2 miners training"},
        ),
        (
            _view("training",
                  progress=[{**PROGRESS[0], "accuracy": 0.9, "loss": 0.1}, PROGRESS[1]]),
            {"phase": "Training", "epoch": 5, "loss": 0.1, "accuracy": 0.9},
        ),
        (
            _view("evaluating", progress=PROGRESS, blocks=9),
            {"phase": "Evaluating", "epoch": 5, "blocks": 9,
             "message": "the evaluator is scoring the final models"},
        ),
        (
            _view("completed", progress=PROGRESS, blocks=11, test_accuracy=0.93,
                  model_available=True),
            {"phase": "Completed", "epoch": 5, "testAccuracy": 0.93, "blocks": 11,
             "modelUrl": f"{NODE}/tasks/{TASK_ID}/model",
             "message": "completed: test accuracy 0.9300"},
        ),
        (
            _view("completed", test_accuracy=0.5, model_available=False),
            {"phase": "Completed", "modelUrl": None,
             "message": "completed: test accuracy 0.5000; this node does not hold the best model"},
        ),
        (
            _view("failed", message="no final model from any miner"),
            {"phase": "Failed", "message": "no final model from any miner", "modelUrl": None},
        ),
    ],
)  # fmt: skip
def test_the_task_view_becomes_the_status(view: dict[str, Any], expected: dict[str, Any]) -> None:
    status = status_from_view(view, NODE)
    assert {key: status.get(key) for key in expected} == expected


def test_an_unknown_phase_is_an_error_not_a_guess() -> None:
    with pytest.raises(ValueError, match="unknown task phase"):
        status_from_view(_view("exploded"), NODE)


@pytest.mark.parametrize(
    ("phase", "types"),
    [
        ("pending", {SYNCED: "True"}),
        ("training", {SYNCED: "True"}),
        ("completed", {SYNCED: "True", SUCCEEDED: "True"}),
        ("failed", {SYNCED: "True", SUCCEEDED: "False"}),
        ("refunded", {SYNCED: "True", SUCCEEDED: "False"}),
    ],
)
def test_a_poll_sets_synced_and_on_the_end_succeeded(phase: str, types: dict[str, str]) -> None:
    conditions = view_conditions(status_from_view(_view(phase), NODE), "client-0", 3)
    assert {c["type"]: c["status"] for c in conditions} == types
    assert all(c["observedGeneration"] == 3 and c["reason"] for c in conditions)


@pytest.mark.parametrize(
    "why",
    [
        "dataset refused: dataset 'cells.npz' declares features=4 but the file has 5",
        "training failed: RuntimeError: mat1 and mat2 shapes cannot be multiplied",
        "training diverged: loss is nan at epoch 3",
    ],
)
def test_a_training_failure_ends_the_mltask_failed_with_the_nodes_reason(why: str) -> None:
    status = status_from_view(_view("failed", message=why), NODE)
    assert (status.get("phase"), status.get("message")) == ("Failed", why)
    (succeeded,) = [c for c in view_conditions(status, "miner-0", 2) if c["type"] == SUCCEEDED]
    assert (succeeded["status"], succeeded["reason"], succeeded["message"]) == (
        "False",
        "TaskFailed",
        why,
    )


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ApiError(0, "unreachable", "GET x: ConnectError"),
         Failure("NodeUnreachable", "GET x: ConnectError", permanent=False)),
        (ApiError(503, "", "node error: RuntimeError"),
         Failure("NodeUnreachable", "the node answered 503: node error: RuntimeError", False)),
        (ApiError(409, "overspend", "spends 5, balance is 1"),
         Failure("Overspend", "spends 5, balance is 1", permanent=True)),
        (ApiError(409, "invalid_task_spec", "bad"), Failure("InvalidTaskSpec", "bad", True)),
        (ApiError(422, "", "dataset.name='mnist' is not a built-in dataset"),
         Failure("InvalidSpec", "dataset.name='mnist' is not a built-in dataset", True)),
        (ApiError(422, "invalid", "epochs: too small"),
         Failure("InvalidSpec", "epochs: too small", True)),
        (ApiError(401, "", "writes need a token"),
         Failure("Unauthorized", "the node refused the API token: writes need a token", False)),
        (ApiError(429, "", "slow down"), Failure("NodeBusy", "the node answered 429: slow down",
                                                 False)),
        (ApiError(404, "", ""), Failure("Refused", "the node refused it (404)", True)),
        (ApiError(201, "malformed", "no task_id in the answer"),
         Failure("MalformedAnswer", "malformed: no task_id in the answer", False)),
    ],
)  # fmt: skip
def test_api_errors_become_reasons(error: ApiError, expected: Failure) -> None:
    assert failure_of(error) == expected


@pytest.mark.parametrize(
    ("rule", "reason"),
    [("overspend", "Overspend"), ("duplicate_nonce", "DuplicateNonce"), ("bad-x", "BadX")],
)
def test_a_node_rule_is_a_camel_case_reason(rule: str, reason: str) -> None:
    assert camel_reason(rule) == reason


def test_a_status_write_holds_only_what_changed() -> None:
    synced = condition(SYNCED, True, "Polled", "training on client-0", 2)
    status = {"phase": "Training", "epoch": 3, "loss": None, "conditions": [synced],
              "observedGeneration": 2}  # fmt: skip
    same = condition(SYNCED, True, "Polled", "training on client-0", 2)
    assert status_changes(status, 2, {"phase": "Training", "epoch": 3, "loss": None}, [same]) == {}
    changes = status_changes(status, 2, {"phase": "Training", "epoch": 4}, [same])
    assert changes == {"epoch": 4}
    lost = condition(SYNCED, False, "NodeUnreachable", "refused", 2)
    changes = status_changes(status, 3, {}, [lost])
    assert changes["observedGeneration"] == 3
    assert [c["reason"] for c in changes["conditions"]] == ["NodeUnreachable"]


def test_backoff_doubles_up_to_a_cap() -> None:
    assert [backoff(retry, 0.5) for retry in range(4)] == [0.5, 1.0, 2.0, 4.0]
    assert backoff(30, 5.0) == 300.0 and backoff(3, 1.0, cap=5.0) == 5.0
