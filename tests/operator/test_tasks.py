"""MLTask through the real operator (kopf, in-memory API server) and a real node API (the
FastAPI app over a scripted node, served by uvicorn on 127.0.0.1)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from pouw_operator.settings import OperatorSettings
from tests.operator.harness import OperatorCluster, unused_local_url
from tests.operator.node_api import ScriptedNode, progress
from tests.operator.observe import (
    Body,
    condition_of,
    in_phase,
    pouwnode,
    reconciles,
    resources,
    status_of,
    with_condition,
)


@pytest.fixture
def operator_settings(node_api_settings: OperatorSettings) -> OperatorSettings:
    return node_api_settings


def mltask(name: str, **changes: Any) -> Body:
    spec: Body = {
        "model": {"architecture": "mlp", "layers": [4, 16, 3], "activation": "relu"},
        "dataset": {"name": "iris", "format": "builtin"},
        "optimizer": "sgd",
        "hyperparameters": {"learningRate": 0.1, "batchSize": 16, "epochs": 5},
        "minAccuracy": 0.8,
        "miners": 1,
        "reward": 10,
        "fee": 0.01,
        **changes,
    }
    return {"metadata": {"name": name}, "spec": spec}


def task_status(cluster: OperatorCluster, name: str) -> Body:
    return status_of(cluster, "mltasks", name)


def phase(cluster: OperatorCluster, name: str, wanted: str) -> Callable[[], Body | None]:
    return in_phase(cluster, "mltasks", name, wanted)


def reconciled(cluster: OperatorCluster, result: str) -> float:
    return reconciles(cluster, "MLTask", result)


def held(cluster: OperatorCluster, phase_: str) -> float:
    """MLTasks in that phase, as the operator's gauge counts them."""
    return resources(cluster, "MLTask", phase_)


def paid_and_training(cluster: OperatorCluster, node: ScriptedNode, name: str) -> str:
    """MLTask `name` paid through a client PoUWNode, then training (one epoch, as the node
    says and the status shows): its task id."""
    cluster.create("pouwnodes", pouwnode("client"))
    cluster.create("mltasks", mltask(name))
    cluster.wait_for(phase(cluster, name, "Submitted"), message="Submitted")
    [task_id] = node.payments
    node.advance(task_id, "training", progress=progress((1, 0.9, 0.5)))
    cluster.wait_for(phase(cluster, name, "Training"), message="Training")
    return task_id


def test_a_task_is_paid_once_and_followed_to_completed(
    operator_cluster: OperatorCluster, node: ScriptedNode, node_url: str
) -> None:
    cluster = operator_cluster
    cluster.create("pouwnodes", pouwnode("sup", "supervisor"))
    cluster.create("pouwnodes", pouwnode("client"))
    created = cluster.create("mltasks", mltask("iris"))
    status = cluster.wait_for(phase(cluster, "iris", "Submitted"), message="Submitted")
    [task_id] = node.payments
    assert status["taskId"] == task_id and status["submittedTo"] == "client-0"
    assert condition_of(status, "Submitted")["status"] == "True"
    [payment] = node.posts
    assert payment.request_id == f"mltask-{created['metadata']['uid']}"
    assert (payment.reward, payment.fee, payment.spec.epochs) == (10.0, 0.01, 5)
    assert (payment.spec.batch_size, payment.spec.min_accuracy) == (16, 0.8)

    node.advance(task_id, "training", progress=progress((2, 0.6, 0.7), (3, 0.4, 0.9)), blocks=2)
    status = cluster.wait_for(phase(cluster, "iris", "Training"), message="Training")
    assert (status["epoch"], status["loss"], status["accuracy"], status["blocks"]) == (
        3, 0.4, 0.9, 2
    )  # fmt: skip
    assert condition_of(status, "Synced")["reason"] == "Polled"

    node.advance(task_id, "evaluating", progress=progress((5, 0.2, 0.95), (5, 0.3, 0.9)))
    cluster.wait_for(phase(cluster, "iris", "Evaluating"), message="Evaluating")
    node.advance(task_id, "completed", test_accuracy=0.93, model_available=True, blocks=6)
    status = cluster.wait_for(phase(cluster, "iris", "Completed"), message="Completed")
    assert status["testAccuracy"] == 0.93 and status["blocks"] == 6
    assert status["modelUrl"] == f"{node_url}/tasks/{task_id}/model"
    assert condition_of(status, "Succeeded")["reason"] == "TaskCompleted"
    assert status["observedGeneration"] == 1
    assert len(node.posts) == 1
    assert held(cluster, "Completed") == 1 and held(cluster, "Training") == 0
    assert reconciled(cluster, "error") == 0


def test_a_restarted_operator_does_not_pay_again(
    operator_cluster: OperatorCluster, node: ScriptedNode
) -> None:
    cluster = operator_cluster
    cluster.create("pouwnodes", pouwnode("client"))
    cluster.create("mltasks", mltask("iris"))
    submitted = cluster.wait_for(phase(cluster, "iris", "Submitted"), message="Submitted")

    # After the status write: the resumed handler sees the task id and pays nothing.
    resumed = reconciled(cluster, "ok")
    cluster.restart_operator()
    cluster.wait_for(lambda: reconciled(cluster, "ok") > resumed, message="the resume handler")
    assert len(node.posts) == 1

    # Between paying and writing the task id: only the pinned pod is on record.
    cluster.stop_operator()
    cluster.patch("mltasks", "iris", {"status": {"taskId": None, "phase": "Pending"}}, "status")
    cluster.create("pouwnodes", pouwnode("another"))  # a second candidate, ahead by name
    cluster.start_operator()
    again = cluster.wait_for(phase(cluster, "iris", "Submitted"), message="Submitted again")
    assert again["taskId"] == submitted["taskId"] and again["submittedTo"] == "client-0"
    assert len(node.posts) == 2 and len(node.payments) == 1  # asked twice, paid once
    assert {post.request_id for post in node.posts} == {node.posts[0].request_id}


@pytest.mark.parametrize(
    ("changes", "reason", "words", "reached_the_node"),
    [
        ({"dataset": {"name": "mnist"}}, "InvalidSpec", "not a built-in dataset", False),
        ({"reward": 99.995, "fee": 0.01}, "Overspend", "balance is 100", True),
        ({"model": {"layers": [4]}}, "InvalidSpec", "model.layers", False),
    ],
)
def test_a_refused_task_fails_with_the_nodes_reason(
    operator_cluster: OperatorCluster,
    node: ScriptedNode,
    changes: Body,
    reason: str,
    words: str,
    reached_the_node: bool,
) -> None:
    cluster = operator_cluster
    cluster.create("pouwnodes", pouwnode("client"))
    cluster.create("mltasks", mltask("bad", **changes))
    status = cluster.wait_for(phase(cluster, "bad", "Failed"), message="Failed")
    submitted = condition_of(status, "Submitted")
    assert (submitted["status"], submitted["reason"]) == ("False", reason)
    assert words in submitted["message"] and words in status["message"]
    assert "taskId" not in status and node.payments == []
    assert len(node.posts) == int(reached_the_node)
    assert held(cluster, "Failed") == 1
    assert reconciled(cluster, "retry") == 0 and reconciled(cluster, "error") == 0


def test_without_a_node_the_task_waits_and_is_retried_slowly(
    operator_cluster: OperatorCluster, node: ScriptedNode
) -> None:
    cluster = operator_cluster
    cluster.create("pouwnodes", pouwnode("web", team="web"))
    cluster.create("mltasks", mltask("picky", networkSelector={"matchLabels": {"team": "ml"}}))
    status = cluster.wait_for(phase(cluster, "picky", "Pending"), message="Pending")
    cluster.wait_for(lambda: condition_of(task_status(cluster, "picky"), "Submitted"))
    submitted = condition_of(task_status(cluster, "picky"), "Submitted")
    assert (submitted["status"], submitted["reason"]) == ("False", "NoNode")
    assert "team=ml" in submitted["message"]
    assert reconciled(cluster, "error") == 0 and reconciled(cluster, "retry") <= 3  # no hot loop

    cluster.create("pouwnodes", pouwnode("ml", "miner", team="ml"))
    status = cluster.wait_for(phase(cluster, "picky", "Submitted"), message="Submitted")
    assert status["submittedTo"] == "ml-0" and len(node.payments) == 1
    assert reconciled(cluster, "error") == 0


def test_an_unreachable_node_is_a_condition_and_a_backoff_not_a_crash_loop(
    operator_cluster: OperatorCluster, node: ScriptedNode, node_url: str
) -> None:
    cluster = operator_cluster
    cluster.restart_operator(node_url=unused_local_url())
    cluster.create("pouwnodes", pouwnode("client"))
    cluster.create("mltasks", mltask("iris"))
    unreachable = with_condition(cluster, "mltasks", "iris", "Submitted", reason="NodeUnreachable")
    submitted = cluster.wait_for(unreachable, message="NodeUnreachable")
    assert submitted["status"] == "Unknown" and "Connection refused" in submitted["message"]
    assert task_status(cluster, "iris")["phase"] == "Pending"
    cluster.wait_for(lambda: reconciled(cluster, "retry") >= 3, message="three retries")
    assert reconciled(cluster, "error") == 0 and reconciled(cluster, "ok") == 0

    cluster.restart_operator(node_url=node_url)  # the node is back
    status = cluster.wait_for(phase(cluster, "iris", "Submitted"), message="Submitted")
    assert condition_of(status, "Submitted")["status"] == "True" and len(node.payments) == 1


def test_a_poll_that_fails_keeps_the_phase_and_says_why(
    operator_cluster: OperatorCluster, node: ScriptedNode
) -> None:
    cluster = operator_cluster
    task_id = paid_and_training(cluster, node, "iris")
    node.unavailable = True
    out_of_sync = with_condition(cluster, "mltasks", "iris", "Synced", status="False")
    synced = cluster.wait_for(out_of_sync, message="Synced False")
    assert synced["reason"] == "NodeUnreachable" and "503" in synced["message"]
    assert task_status(cluster, "iris")["phase"] == "Training"
    node.unavailable = False
    node.advance(task_id, "failed", message="no final model from any miner")
    status = cluster.wait_for(phase(cluster, "iris", "Failed"), message="Failed")
    assert status["message"] == "no final model from any miner"
    assert condition_of(status, "Succeeded")["status"] == "False"
    assert condition_of(status, "Synced")["status"] == "True"
    assert reconciled(cluster, "error") == 0


def test_a_task_deleted_mid_training_is_no_longer_polled(
    operator_cluster: OperatorCluster, node: ScriptedNode
) -> None:
    cluster = operator_cluster
    first = paid_and_training(cluster, node, "gone")

    cluster.delete("mltasks", "gone")
    cluster.wait_until_gone("mltasks", "gone")
    cluster.wait_for(lambda: held(cluster, "Training") == 0, message="gauge forgotten")

    # Another task, followed from payment to completion: poll rounds after the deletion. The
    # poller's rounds run one after another, so once it asked about the new task, no poll of
    # the deleted one is under way any more.
    cluster.create("mltasks", mltask("next"))
    cluster.wait_for(phase(cluster, "next", "Submitted"), message="Submitted")
    second = next(task for task in node.payments if task != first)
    cluster.wait_for(lambda: node.reads[second] >= 1, message="a poll of the new task")
    reads = node.reads[first]
    node.advance(second, "training", progress=progress((1, 0.9, 0.5)))
    cluster.wait_for(phase(cluster, "next", "Training"), message="Training")
    node.advance(second, "completed", test_accuracy=0.9, model_available=True)
    cluster.wait_for(phase(cluster, "next", "Completed"), message="Completed")
    assert node.reads[second] >= 3
    assert node.reads[first] == reads  # the network goes on training it; nobody asks
    assert len(node.posts) == 2
    assert reconciled(cluster, "error") == 0
