"""NodeClient against the app in process (no network), and its import isolation."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from pouw.api.app import create_app
from pouw.api.client import ApiError, NodeClient
from pouw.errors import InvalidTransaction, Reason
from pouw.roles import NodeRole
from tests.api.fake_node import DONE_ID, NEW_ID, TOKEN, TRAINING_ID, FakeNode, client_for

SPEC = {"model": {"layers": [64, 32, 10]}, "dataset": {"name": "digits"}, "epochs": 3}


@pytest.fixture
def fake() -> FakeNode:
    return FakeNode()


@pytest.fixture
def client(fake: FakeNode) -> NodeClient:
    return client_for(create_app(fake, api_token=TOKEN))


def test_every_read(client: NodeClient) -> None:
    assert client.status()["blockchain_height"] == 3
    assert client.health()["healthy"] is True
    assert client.economics()["stake_amount"] == 10.0
    assert client.block(1)["height"] == 1
    assert [view["task_id"] for view in client.tasks()] == [DONE_ID, TRAINING_ID]
    assert client.task(TRAINING_ID)["progress"][0]["iterations"] == 40
    assert client.task_model(DONE_ID) == b"safetensors bytes"


def test_health_of_an_unhealthy_node_is_still_read(client: NodeClient, fake: FakeNode) -> None:
    fake.healthy = False
    assert client.health()["healthy"] is False


def test_writes(client: NodeClient, fake: FakeNode) -> None:
    assert client.submit_task(SPEC, reward=5.0, fee=0.5, request_id="r-1") == NEW_ID
    spec, reward, fee, request_id = fake.submitted[0]
    assert (spec.epochs, reward, fee, request_id) == (3, 5.0, 0.5, "r-1")
    ticket = client.stake(3.0, role="evaluator")
    assert (ticket["role"], ticket["amount"]) == ("EVALUATOR", 3.0)
    assert client.stake(4.0, request_id="s-1") == client.stake(4.0, request_id="s-1")
    assert fake.staked == [(3.0, NodeRole.EVALUATOR), (4.0, None)]


def test_errors_carry_the_servers_message(client: NodeClient, fake: FakeNode) -> None:
    with pytest.raises(ApiError) as missing:
        client.block(99)
    assert (missing.value.status, missing.value.reason) == (404, "")
    assert "above the chain's tip" in missing.value.message
    with pytest.raises(ApiError) as invalid:
        client.submit_task({**SPEC, "epochs": 0}, reward=5.0)
    assert (invalid.value.status, invalid.value.reason) == (422, "invalid")
    assert invalid.value.message.startswith("epochs:")
    with pytest.raises(ApiError) as not_yet:
        client.task_model(TRAINING_ID)
    assert not_yet.value.status == 404 and "training" in not_yet.value.message
    fake.refuse_with = InvalidTransaction(Reason.OVERSPEND, "spends 3, balance is 1")
    with pytest.raises(ApiError) as refused:
        client.stake(3.0)
    assert (refused.value.status, refused.value.reason) == (409, "overspend")
    assert refused.value.message == "spends 3, balance is 1" and not refused.value.retryable
    fake.explode = True
    with pytest.raises(ApiError) as failed:
        client.status()
    assert failed.value.status == 503 and failed.value.retryable


def test_a_wrong_token_is_401(fake: FakeNode) -> None:
    client = client_for(create_app(fake, api_token=TOKEN), token="wrong")
    assert client.status()["node_id"] == "fake"
    with pytest.raises(ApiError) as refused:
        client.submit_task(SPEC, reward=1.0)
    assert refused.value.status == 401 and "POUW_API_TOKEN" in refused.value.message


def test_no_answer_is_an_api_error_too() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    client = NodeClient("http://node", transport=httpx.MockTransport(refuse))
    with client, pytest.raises(ApiError) as unreachable:
        client.status()
    assert (unreachable.value.status, unreachable.value.reason) == (0, "unreachable")
    assert unreachable.value.retryable and "http://node/status" in unreachable.value.message


def test_a_non_json_answer_is_an_api_error() -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(200, text="<html>"))
    with pytest.raises(ApiError) as malformed:
        NodeClient("http://proxy", transport=transport).status()
    assert malformed.value.reason == "malformed"
    gateway = httpx.MockTransport(lambda request: httpx.Response(502, text="bad gateway"))
    with pytest.raises(ApiError) as bad_gateway:
        NodeClient("http://proxy", transport=gateway).tasks()
    assert (bad_gateway.value.status, bad_gateway.value.message) == (502, "bad gateway")


def test_the_client_imports_neither_torch_nor_the_rest_of_pouw() -> None:
    probe = (
        "import sys, pouw.api.client; "
        "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'numpy', 'pouw', 'fastapi', 'msgspec'))))"
    )
    loaded = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", probe],
        capture_output=True,
        text=True,
        check=True,
    )
    assert loaded.stdout.strip().split(",") == ["pouw", "pouw.api", "pouw.api.client"]
    assert "torch" not in loaded.stderr  # -X importtime lists every module imported
