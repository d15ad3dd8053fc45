from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from pouw.api.app import create_app
from pouw.api.client import ApiError, NodeClient
from pouw.api.server import serve_api
from pouw.blockchain.errors import InvalidTransaction
from pouw.task_commands import task
from tests.api.fake_node import TASK_ID, FakeNode

TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
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


def test_reads_are_open(api: TestClient) -> None:
    assert api.get("/status").json()["node_id"] == "fake"
    assert api.get("/economics").json()["staked"] is True
    assert api.get("/blocks/2").json() == {"height": 2}
    assert api.get("/tasks").json()[0]["task_id"] == TASK_ID
    assert api.get(f"/tasks/{TASK_ID}").json()["phase"] == "completed"
    assert api.get(f"/tasks/{TASK_ID}/model").content == b"safetensors bytes"
    assert api.get("/health").json()["success_rate"] == 1.0
    assert api.get("/docs").status_code == 200


def test_unhealthy_answers_503_for_probes(api: TestClient, fake: FakeNode) -> None:
    fake.healthy = False
    assert api.get("/health").status_code == 503


def test_missing_things_are_404_and_bad_ids_422(api: TestClient) -> None:
    assert api.get("/blocks/99").status_code == 404
    assert api.get("/tasks/" + "00" * 32).status_code == 404
    assert api.get("/tasks/" + "00" * 32 + "/model").status_code == 404
    response = api.get("/tasks/not-hex")
    assert response.status_code == 422 and "64 hex" in response.text


def test_writes_need_the_token(api: TestClient) -> None:
    for path, body in (("/tasks", TASK), ("/stake", {"amount": 1})):
        assert api.post(path, json=body).status_code == 401
        wrong = api.post(path, json=body, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and "POUW_API_TOKEN" in wrong.text


def test_a_task_is_submitted_with_its_request_id(api: TestClient, fake: FakeNode) -> None:
    response = api.post("/tasks", json={**TASK, "request_id": "op-1"}, headers=AUTH)
    assert response.status_code == 201 and response.json() == {"task_id": "cd" * 32}
    spec, reward, fee, request_id = fake.submitted[0]
    assert (spec.epochs, reward, fee, request_id) == (3, 5.0, 0.01, "op-1")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"reward": -1}, "reward"),
        ({"epochs": 0}, "epochs"),
        ({"optimizer": "lbfgs"}, "optimizer"),
        ({"dataset": None}, "dataset"),
        ({"model": {"layers": [0, 2]}}, "layers"),
    ],
)
def test_invalid_bodies_get_422_naming_the_field(
    api: TestClient, change: dict[str, Any], field: str
) -> None:
    response = api.post("/tasks", json={**TASK, **change}, headers=AUTH)
    assert response.status_code == 422 and field in response.text


def test_a_spec_the_ledger_refuses_gets_422_with_the_reason(api: TestClient) -> None:
    body = {**TASK, "dataset": {"name": "imagenet"}}
    response = api.post("/tasks", json=body, headers=AUTH)
    assert response.status_code == 422 and "not a built-in dataset" in response.text


def test_a_refused_transaction_gets_409_with_its_rule(api: TestClient, fake: FakeNode) -> None:
    fake.refuse_with = InvalidTransaction("overspend", "spends 5, balance is 1")
    response = api.post("/stake", json={"amount": 5, "role": "miner"}, headers=AUTH)
    assert response.status_code == 409 and response.json()["detail"]["reason"] == "overspend"


def test_metrics_are_prometheus_text_and_count_responses(api: TestClient) -> None:
    api.get("/status")
    api.get("/blocks/99")
    text = api.get("/metrics").text
    families = {family.name: family for family in text_string_to_metric_families(text)}
    assert "pouw_chain_height" in families
    statuses = {s.labels["status"]: s.value for s in families["pouw_api_requests"].samples}
    assert statuses["2xx"] >= 1 and statuses["4xx"] >= 1


def test_an_unexpected_error_is_a_503_not_a_500(api: TestClient, fake: FakeNode) -> None:
    fake.explode = True
    response = api.get("/status")
    assert response.status_code == 503 and "RuntimeError" in response.text


@settings(max_examples=60, deadline=None)
@given(
    body=st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.dictionaries(
                st.sampled_from(["model", "dataset", "reward", "epochs", "amount", "role", "x"]),
                inner,
                max_size=5,
            )
        ),
        max_leaves=12,
    ),
    path=st.sampled_from(["/tasks", "/stake"]),
)
def test_no_body_gets_a_5xx(body: object, path: str) -> None:
    api = TestClient(create_app(FakeNode(), api_token=TOKEN), raise_server_exceptions=False)
    response = api.post(path, content=json.dumps(body, allow_nan=True), headers=AUTH)
    assert response.status_code < 500


def test_the_client_speaks_the_api(fake: FakeNode) -> None:
    client = _client_for(create_app(fake, api_token=TOKEN))
    assert client.status()["blockchain_height"] == 3
    assert client.submit_task(_spec(), reward=5.0, request_id="r") == "cd" * 32
    assert client.task_model(TASK_ID) == b"safetensors bytes"
    with pytest.raises(ApiError) as refused:
        client.block(99)
    assert refused.value.status == 404


def _spec() -> dict[str, Any]:
    return {key: value for key, value in TASK.items() if key != "reward"}


def _client_for(app: Any) -> NodeClient:
    test_client = TestClient(app)

    class Bridge(httpx.BaseTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            response = test_client.request(
                request.method, request.url.path, content=request.content, headers=request.headers
            )
            return httpx.Response(
                response.status_code, headers=response.headers, content=response.content
            )

    return NodeClient("http://node", TOKEN, transport=Bridge())


def test_the_api_serves_for_real_on_a_free_port(fake: FakeNode) -> None:
    async def scenario() -> int:
        server = await serve_api(create_app(fake, api_token=None), "127.0.0.1", 0)
        try:
            async with httpx.AsyncClient() as client:
                response = await client.get(f"http://127.0.0.1:{server.port}/status")
                return response.status_code
        finally:
            await server.stop()

    assert asyncio.run(scenario()) == 200


def test_task_commands_submit_and_report(
    tmp_path: Path, fake: FakeNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = create_app(fake, api_token=TOKEN)
    monkeypatch.setattr("pouw.task_commands._client", lambda node, token: _client_for(app))
    manifest = tmp_path / "task.yaml"
    manifest.write_text(
        "apiVersion: pouw.network/v1alpha1\nkind: MLTask\nspec:\n"
        "  model: {layers: [64, 32, 10]}\n  dataset: {name: digits}\n  reward: 5\n"
    )
    runner = CliRunner()
    submitted = runner.invoke(task, ["submit", str(manifest)])
    assert submitted.exit_code == 0 and submitted.output.strip() == "cd" * 32
    status = runner.invoke(task, ["status", TASK_ID, "--json"])
    assert json.loads(status.output)["phase"] == "completed"
    out = tmp_path / "model.safetensors"
    assert runner.invoke(task, ["model", TASK_ID, "-o", str(out)]).exit_code == 0
    assert out.read_bytes() == b"safetensors bytes"
    missing = runner.invoke(task, ["submit", str(tmp_path / "nope.yaml")])
    assert missing.exit_code != 0
