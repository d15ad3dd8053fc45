"""The routes against a fake node: open reads, guarded writes, 4xx with a message, never 500."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from pouw.api.app import MAX_BODY_BYTES, create_app
from pouw.blockchain.transactions import Transfer, encode_transaction, sign_transaction
from pouw.crypto import KeyPair
from pouw.errors import InvalidTransaction, Reason
from pouw.node.requests import RequestConflict
from pouw.roles import NodeRole
from tests.api.fake_node import DONE_ID, NEW_ID, TOKEN, TRAINING_ID, FakeNode

AUTH = {"Authorization": f"Bearer {TOKEN}"}
RAW = {**AUTH, "Content-Type": "application/json"}  # for bodies sent as raw content
TASK: dict[str, Any] = {
    "model": {"layers": [64, 32, 10]},
    "dataset": {"name": "digits"},
    "epochs": 3,
    "reward": 5.0,
}


@pytest.fixture
def fake() -> FakeNode:
    return FakeNode()


@pytest.fixture
def api(fake: FakeNode) -> TestClient:
    return TestClient(create_app(fake, api_token=TOKEN), raise_server_exceptions=False)


def _requests(fake: FakeNode) -> dict[str, float]:
    families = text_string_to_metric_families(fake.metrics.exposition().decode())
    family = next(f for f in families if f.name == "pouw_api_requests")
    return {s.labels["status"]: s.value for s in family.samples if s.name.endswith("_total")}


def test_every_read_answers_without_a_token(api: TestClient) -> None:
    assert api.get("/status").json()["node_id"] == "fake"
    assert api.get("/economics").json()["staked"] is True
    assert api.get("/blocks/2").json()["height"] == 2
    assert [t["task_id"] for t in api.get("/tasks").json()] == [DONE_ID, TRAINING_ID]
    view = api.get(f"/tasks/{TRAINING_ID}").json()
    assert view["phase"] == "training" and view["progress"][1]["finished"] is True
    model = api.get(f"/tasks/{DONE_ID}/model")
    assert model.content == b"safetensors bytes"
    assert model.headers["content-type"] == "application/octet-stream"
    assert api.get(f"/tasks/{DONE_ID.upper()}").json()["task_id"] == DONE_ID
    assert api.get("/docs").status_code == 200


def test_openapi_lists_every_route() -> None:
    paths = create_app(FakeNode(), api_token=None).openapi()["paths"]
    assert set(paths) == {
        "/status", "/health", "/economics", "/metrics", "/blocks/{height}", "/tasks",
        "/tasks/{task_id}", "/tasks/{task_id}/model", "/stake", "/accounts/{address}",
        "/transactions",
    }  # fmt: skip
    assert set(paths["/tasks"]) == {"get", "post"}


def test_health_answers_its_fields_and_503_when_unhealthy(api: TestClient, fake: FakeNode) -> None:
    healthy = api.get("/health")
    assert healthy.status_code == 200
    assert healthy.json() == {
        "response_time": 1.0, "success_rate": 1.0, "cpu_usage": 5.0, "memory_usage": 10.0,
        "healthy": True,
    }  # fmt: skip
    fake.healthy = False
    unhealthy = api.get("/health")
    assert unhealthy.status_code == 503 and unhealthy.json()["healthy"] is False


def test_missing_things_are_404_with_a_reason(api: TestClient) -> None:
    assert "above the chain's tip" in api.get("/blocks/4").json()["detail"]
    assert api.get("/tasks/" + "00" * 32).status_code == 404
    assert api.get("/tasks/" + "00" * 32 + "/model").status_code == 404
    not_yet = api.get(f"/tasks/{TRAINING_ID}/model")
    assert not_yet.status_code == 404
    assert "training" in not_yet.json()["detail"] and "completes" in not_yet.json()["detail"]


@pytest.mark.parametrize("bad", ["not-hex", "ab" * 31, "ab" * 33, "zz" * 32])
def test_a_malformed_task_id_is_422(api: TestClient, bad: str) -> None:
    for path in (f"/tasks/{bad}", f"/tasks/{bad}/model"):
        response = api.get(path)
        assert response.status_code == 422 and "64 hex" in response.json()["detail"]


def test_a_bad_height_is_422_naming_it(api: TestClient) -> None:
    for bad in ("-1", "x", str(2**70)):
        response = api.get(f"/blocks/{bad}")
        assert response.status_code == 422 and "height" in response.text


def test_writes_need_the_token(api: TestClient, fake: FakeNode) -> None:
    for path, body in (("/tasks", TASK), ("/stake", {"amount": 1})):
        missing = api.post(path, json=body)
        assert missing.status_code == 401 and "POUW_API_TOKEN" in missing.json()["detail"]
        assert missing.headers["www-authenticate"] == "Bearer"
        wrong = api.post(path, json=body, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and "wrong" in wrong.json()["detail"]
        basic = api.post(path, json=body, headers={"Authorization": f"Basic {TOKEN}"})
        assert basic.status_code == 401
    assert fake.submitted == [] and fake.staked == []


def test_without_a_configured_token_writes_are_open(fake: FakeNode) -> None:
    api = TestClient(create_app(fake, api_token=None))
    assert api.post("/stake", json={"amount": 2}).status_code == 201


def test_a_task_is_submitted_with_its_request_id(api: TestClient, fake: FakeNode) -> None:
    response = api.post("/tasks", json={**TASK, "request_id": "op-1"}, headers=AUTH)
    assert response.status_code == 201 and response.json() == {"task_id": NEW_ID}
    spec, reward, fee, request_id = fake.submitted[0]
    assert (spec.epochs, spec.model.layers, reward, fee, request_id) == (
        3, (64, 32, 10), 5.0, 0.01, "op-1"
    )  # fmt: skip
    api.post("/tasks", json={**TASK, "fee": 0}, headers=AUTH)
    assert fake.submitted[1][2:] == (0.0, None)


def test_a_stake_with_a_repeated_request_id_buys_once(api: TestClient, fake: FakeNode) -> None:
    body = {"amount": 2.5, "role": "verifier", "request_id": "stake-1"}
    first = api.post("/stake", json=body, headers=AUTH)
    again = api.post("/stake", json=body, headers=AUTH)
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json() and first.json()["ticket_id"] == "ef" * 32
    assert fake.staked == [(2.5, NodeRole.VERIFIER)]
    assert api.post("/stake", json={**body, "request_id": ""}, headers=AUTH).status_code == 422


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"reward": -1}, "reward"),
        ({"reward": 0}, "reward"),
        ({"fee": -0.5}, "fee"),
        ({"epochs": 0}, "epochs"),
        ({"optimizer": "lbfgs"}, "optimizer"),
        ({"dataset": None}, "dataset"),
        ({"model": {"layers": [0, 2]}}, "layers"),
        ({"model": {"layers": [4, 2], "depth": 3}}, "depth"),
        ({"learning_rate": "fast"}, "learning_rate"),
        ({"colour": "blue"}, "colour"),
        ({"request_id": ""}, "request_id"),
    ],
)
def test_invalid_bodies_get_422_naming_the_field(
    api: TestClient, fake: FakeNode, change: dict[str, Any], field: str
) -> None:
    response = api.post("/tasks", json={**TASK, **change}, headers=AUTH)
    assert response.status_code == 422
    assert any(field in entry["loc"] for entry in response.json()["detail"])
    assert fake.submitted == []


@pytest.mark.parametrize("missing", ["dataset", "model", "reward"])
def test_a_missing_field_is_named(api: TestClient, missing: str) -> None:
    body = {key: value for key, value in TASK.items() if key != missing}
    response = api.post("/tasks", json=body, headers=AUTH)
    assert response.status_code == 422
    assert ["body", missing] in [entry["loc"] for entry in response.json()["detail"]]


def test_infinite_amounts_are_refused(api: TestClient) -> None:
    body = json.dumps({**TASK, "reward": math.inf})
    assert api.post("/tasks", content=body, headers=RAW).status_code == 422


def test_a_spec_the_ledger_refuses_gets_422_with_its_message(api: TestClient) -> None:
    response = api.post("/tasks", json={**TASK, "dataset": {"name": "imagenet"}}, headers=AUTH)
    assert response.status_code == 422
    assert "not a built-in dataset" in response.json()["detail"]


@pytest.mark.parametrize(
    ("change", "rule"),
    [
        ({"model": {"layers": [64, 10]}, "dataset": {"name": "iris"}}, "has 4 features"),
        ({"model": {"layers": [4, 10]}, "dataset": {"name": "iris"}}, "has 3 classes"),
        (
            {"model": {"layers": [8, 10], "architecture": "cnn", "input_shape": [1, 4, 4]}},
            "holds 16 values but dataset 'digits' has 64 features",
        ),
        (
            {"dataset": {"name": "../../etc/passwd", "format": "csv", "sha256": "0" * 64}},
            "is not a file name in the dataset directory",
        ),
        (
            {"dataset": {"name": "d.npz", "format": "npz", "sha256": "0" * 64, "url": "/dev/zero"}},
            "must be an http or https URL",
        ),
    ],
    ids=["iris-64-10", "iris-4-10", "cnn-shape", "path", "local-url"],
)
def test_an_unrunnable_spec_is_refused_at_submission_naming_the_mismatch(
    api: TestClient, fake: FakeNode, change: dict[str, Any], rule: str
) -> None:
    response = api.post("/tasks", json={**TASK, **change}, headers=AUTH)
    assert response.status_code == 422
    assert rule in response.json()["detail"]
    assert fake.submitted == []


def test_a_refused_transaction_gets_409_with_its_rule(api: TestClient, fake: FakeNode) -> None:
    fake.refuse_with = InvalidTransaction(Reason.OVERSPEND, "spends 5, balance is 1")
    for path, body in (("/tasks", TASK), ("/stake", {"amount": 5, "role": "miner"})):
        response = api.post(path, json=body, headers=AUTH)
        assert response.status_code == 409
        assert response.json() == {"reason": "overspend", "detail": "spends 5, balance is 1"}


def test_stake_takes_a_role_in_any_case(api: TestClient, fake: FakeNode) -> None:
    ticket = api.post("/stake", json={"amount": 2.5, "role": " verifier "}, headers=AUTH)
    assert ticket.status_code == 201
    assert ticket.json() == {
        "ticket_id": "ef" * 32, "role": "VERIFIER", "amount": 2.5, "owner": "pw" + "0" * 40,
        "confirmed": False,
    }  # fmt: skip
    assert api.post("/stake", json={"amount": 1}, headers=AUTH).json()["role"] == "MINER"
    assert fake.staked == [(2.5, NodeRole.VERIFIER), (1.0, None)]
    for bad, field in (({"amount": 1, "role": "king"}, "role"), ({"amount": -1}, "amount")):
        response = api.post("/stake", json=bad, headers=AUTH)
        assert response.status_code == 422 and field in response.text


def test_metrics_are_prometheus_text_and_count_every_response(
    api: TestClient, fake: FakeNode
) -> None:
    api.get("/status")
    api.get("/blocks/99")
    fake.explode = True
    api.get("/status")
    response = api.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    assert families["pouw_chain_height"].samples[0].value == 3
    assert _requests(fake) == {"2xx": 2.0, "4xx": 1.0, "5xx": 1.0}  # /metrics counts too


def test_an_unexpected_error_is_a_503_not_a_500(api: TestClient, fake: FakeNode) -> None:
    fake.explode = True
    for response in (
        api.get("/status"),
        api.post("/tasks", json=TASK, headers=AUTH),
        api.post("/stake", json={"amount": 1}, headers=AUTH),
    ):
        assert response.status_code == 503
        assert response.json() == {"detail": "node error: RuntimeError"}


def test_the_node_health_window_records_work_but_not_probes(fake: FakeNode) -> None:
    api = TestClient(create_app(fake, api_token=TOKEN), raise_server_exceptions=False)
    api.get("/status")
    api.get("/blocks/99")  # a client's mistake is not the node's failure
    fake.explode = True
    api.get("/status")
    for _ in range(5):
        api.get("/health")
        api.get("/metrics")
    assert fake.health.snapshot().success_rate == pytest.approx(2 / 3)


def test_an_oversized_body_is_413(api: TestClient, fake: FakeNode) -> None:
    body = json.dumps({**TASK, "request_id": "x" * MAX_BODY_BYTES})
    assert api.post("/tasks", content=body, headers=RAW).status_code == 413

    def chunks() -> Any:  # no Content-Length: the limit applies while reading
        yield body.encode()

    assert api.post("/tasks", content=chunks(), headers=RAW).status_code == 413
    assert fake.submitted == []
    assert _requests(fake) == {"4xx": 2.0}


def test_a_diverged_miner_loss_is_null_not_an_error(api: TestClient, fake: FakeNode) -> None:
    fake.loss = math.nan
    response = api.get(f"/tasks/{TRAINING_ID}")
    assert response.status_code == 200 and response.json()["progress"][0]["loss"] is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from([
                "model", "dataset", "layers", "name", "format", "sha256", "reward", "fee",
                "epochs", "amount", "role", "request_id", "miners", "tau", "x",
            ]),
            inner,
            max_size=6,
        )
    ),
    max_leaves=16,
)  # fmt: skip


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=json_values, path=st.sampled_from(["/tasks", "/stake"]))
def test_no_json_body_gets_a_5xx(body: object, path: str) -> None:
    fake = FakeNode()
    api = TestClient(create_app(fake, api_token=TOKEN), raise_server_exceptions=False)
    response = api.post(path, content=json.dumps(body, allow_nan=True), headers=RAW)
    assert response.status_code < 500
    assert "5xx" not in _requests(fake)


@settings(max_examples=40, deadline=None)
@given(
    task=st.fixed_dictionaries(
        {"model": st.fixed_dictionaries({"layers": st.lists(st.integers(), max_size=5)})},
        optional={
            "dataset": st.fixed_dictionaries({"name": st.text(max_size=10)}),
            "epochs": st.integers(),
            "reward": st.floats(),
            "tau": st.floats(),
            "batch_size": st.integers(),
        },
    ),
    raw=st.binary(max_size=64),
)
def test_near_valid_tasks_and_raw_bytes_get_no_5xx(task: dict[str, Any], raw: bytes) -> None:
    api = TestClient(create_app(FakeNode(), api_token=TOKEN), raise_server_exceptions=False)
    body = json.dumps(task, allow_nan=True)  # NaN and Infinity, as Python's json reads them
    assert api.post("/tasks", content=body, headers=RAW).status_code < 500
    assert api.post("/tasks", content=raw, headers=RAW).status_code < 500


def test_a_transaction_signed_elsewhere_is_relayed_and_its_account_shown(
    api: TestClient, fake: FakeNode
) -> None:
    faucet = KeyPair.from_seed(b"a faucet")
    recipient = KeyPair.from_seed(b"a pod").address
    tx = sign_transaction(
        faucet, Transfer(recipient=recipient, amount=5), nonce=2, fee=1, chain_id="pouw-lab"
    )
    body = {"transaction": encode_transaction(tx).hex()}
    assert api.post("/transactions", json=body).status_code == 401  # a write needs the token
    relayed = api.post("/transactions", json=body, headers=AUTH)
    assert relayed.status_code == 201 and relayed.json() == {"txid": tx.txid().hex()}
    assert fake.relayed == [tx]
    account = api.get(f"/accounts/{faucet.address}").json()
    assert (account["nonce"], account["next_nonce"]) == (2, 3)

    fake.refuse_with = InvalidTransaction(Reason.DUPLICATE, "already in the mempool")
    again = api.post("/transactions", json=body, headers=AUTH)
    assert again.status_code == 409 and again.json()["reason"] == "duplicate"


@pytest.mark.parametrize("hex_text", ["zz", "00", "abc"])
def test_a_malformed_transaction_or_address_is_a_422(api: TestClient, hex_text: str) -> None:
    relayed = api.post("/transactions", json={"transaction": hex_text}, headers=AUTH)
    assert relayed.status_code == 422
    assert api.get("/accounts/not-an-address").status_code == 422


def test_a_request_id_reused_with_another_body_is_409_naming_it(
    api: TestClient, fake: FakeNode
) -> None:
    fake.refuse_with = RequestConflict("stake", "K")
    answer = api.post("/stake", headers=AUTH, json={"amount": 5.0, "request_id": "K"})
    assert answer.status_code == 409
    assert answer.json()["reason"] == "request_id_reused"
    assert "'K'" in answer.json()["detail"] and "/stake" in answer.json()["detail"]
