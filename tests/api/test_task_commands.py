"""`pouw task` through CliRunner against the app in process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from pouw import task_commands
from pouw.api.app import create_app
from pouw.api.client import NodeClient
from pouw.task_commands import task
from tests.api.fake_node import DONE_ID, NEW_ID, TOKEN, TRAINING_ID, FakeNode, client_for

MANIFEST = """\
apiVersion: pouw.network/v1alpha1
kind: MLTask
metadata: {name: digits}
spec:
  model: {layers: [64, 32, 10], activation: tanh}
  dataset: {name: digits, testFraction: 0.25}
  optimizer: adam
  learningRate: 0.05
  minAccuracy: 0.9
  networkSelector: {matchLabels: {network: dev}}
  reward: 5
  fee: 0.2
"""


@pytest.fixture
def fake() -> FakeNode:
    return FakeNode()


@pytest.fixture
def seen(fake: FakeNode, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str | None]]:
    """The (url, token) of every client made; the client talks to the app in process."""
    app = create_app(fake, api_token=TOKEN)
    made: list[tuple[str, str | None]] = []

    def make_client(url: str, token: str | None) -> NodeClient:
        made.append((url, token))
        return client_for(app, token)

    monkeypatch.setattr(task_commands, "make_client", make_client)
    monkeypatch.delenv("POUW_API_URL", raising=False)
    monkeypatch.delenv("POUW_API_TOKEN", raising=False)
    return made


def test_submit_a_kubernetes_manifest(
    tmp_path: Path, fake: FakeNode, seen: list[tuple[str, str | None]]
) -> None:
    manifest = tmp_path / "task.yaml"
    manifest.write_text(MANIFEST)
    result = CliRunner().invoke(task, ["submit", str(manifest), "--token", TOKEN])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == NEW_ID
    spec, reward, fee, request_id = fake.submitted[0]
    assert (spec.optimizer, spec.learning_rate, spec.min_accuracy) == ("adam", 0.05, 0.9)
    assert (spec.dataset.test_fraction, spec.model.activation) == (0.25, "tanh")
    assert (reward, fee, request_id) == (5.0, 0.2, None)
    assert seen == [("http://127.0.0.1:8080", TOKEN)]


def test_submit_plain_json_from_stdin_with_env_defaults(
    fake: FakeNode, seen: list[tuple[str, str | None]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POUW_API_URL", "http://node-0:8080")
    monkeypatch.setenv("POUW_API_TOKEN", TOKEN)
    body = {"model": {"layers": [4, 3]}, "dataset": {"name": "iris"}, "reward": 1, "epochs": 2}
    result = CliRunner().invoke(
        task, ["submit", "-", "--request-id", "once"], input=json.dumps(body)
    )
    assert result.exit_code == 0, result.output
    assert (fake.submitted[0][0].epochs, fake.submitted[0][3]) == (2, "once")
    assert seen == [("http://node-0:8080", TOKEN)]


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("model: {layers: [4, 3]}\ndataset: {name: iris}\n", "needs a reward"),
        ("- just\n- a list\n", "expected a mapping"),
        ("model: [unclosed\n", "not YAML or JSON"),
        ("model: {layers: [4, 3]}\ndataset: {name: iris}\nreward: 1\nepochs: 0\n", "epochs"),
        ("model: {layers: [4, 3]}\ndataset: {name: iris}\nreward: lots\n", "numbers"),
    ],
)
def test_submit_explains_a_bad_file(
    tmp_path: Path, seen: list[tuple[str, str | None]], text: str, complaint: str
) -> None:
    source = tmp_path / "task.yaml"
    source.write_text(text)
    result = CliRunner().invoke(task, ["submit", str(source), "--token", TOKEN])
    assert result.exit_code == 1 and complaint in result.output
    assert isinstance(result.exception, SystemExit)  # a message, not a traceback


def test_submit_without_the_token_is_refused(seen: list[tuple[str, str | None]]) -> None:
    result = CliRunner().invoke(
        task, ["submit", "-"], input='{"model": {"layers": [4, 3]}, "dataset": {"name": "iris"}, '
        '"reward": 1}'
    )  # fmt: skip
    assert result.exit_code == 1 and "401" in result.output


def test_a_missing_file_is_a_message(tmp_path: Path, seen: list[tuple[str, str | None]]) -> None:
    result = CliRunner().invoke(task, ["submit", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 1 and "No such file" in result.output


def test_status_as_a_table_and_as_json(seen: list[tuple[str, str | None]]) -> None:
    table = CliRunner().invoke(task, ["status", TRAINING_ID])
    assert table.exit_code == 0, table.output
    assert "training" in table.output and "pw111111111111" in table.output
    assert "3/5" in table.output and "0.2500" in table.output
    assert "blocks 3" in table.output and "2 miners training" in table.output
    raw = CliRunner().invoke(task, ["status", DONE_ID, "--json"])
    view = json.loads(raw.output)
    assert (view["phase"], view["test_accuracy"]) == ("completed", 0.93)


def test_status_of_an_unknown_task(seen: list[tuple[str, str | None]]) -> None:
    result = CliRunner().invoke(task, ["status", "00" * 32])
    assert result.exit_code == 1 and "404" in result.output and "no task" in result.output


def test_model_download(tmp_path: Path, seen: list[tuple[str, str | None]]) -> None:
    out = tmp_path / "model.safetensors"
    result = CliRunner().invoke(task, ["model", DONE_ID, "-o", str(out)])
    assert result.exit_code == 0 and out.read_bytes() == b"safetensors bytes"
    not_yet = CliRunner().invoke(task, ["model", TRAINING_ID, "-o", str(tmp_path / "x")])
    assert not_yet.exit_code == 1 and "completes" in not_yet.output
    assert not (tmp_path / "x").exists()
