"""`pouw-operator`: arguments, settings errors, which handler modules load, how kopf is run and
what it is handed as the handlers' memo."""

from __future__ import annotations

from typing import Any

import kopf
import pytest

from pouw_operator import main as operator_main
from pouw_operator.memo import OperatorMemo
from pouw_operator.metrics import METRICS
from pouw_operator.settings import OperatorSettings


@pytest.fixture
def kopf_run(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(kopf, "run", lambda **kwargs: calls.append(kwargs))
    monkeypatch.setenv("POUW_OPERATOR_METRICS_PORT", "0")
    return calls


def test_a_bad_setting_is_one_line_and_exit_status_2(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    kopf_run: list[dict[str, Any]],
) -> None:
    monkeypatch.setenv("POUW_OPERATOR_POLL_SECONDS", "0")
    with pytest.raises(SystemExit) as exit_info:
        operator_main.main([])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert error.startswith("pouw-operator: POUW_OPERATOR_POLL_SECONDS='0' is invalid")
    assert kopf_run == []


def test_all_namespaces_by_default_with_the_liveness_endpoint(
    monkeypatch: pytest.MonkeyPatch, kopf_run: list[dict[str, Any]]
) -> None:
    monkeypatch.setenv("POUW_OPERATOR_POLL_SECONDS", "2.5")
    monkeypatch.setenv("POUW_OPERATOR_LIVENESS_PORT", "9091")
    operator_main.main([])
    (call,) = kopf_run
    assert call["clusterwide"] is True
    assert call["namespaces"] == []
    assert call["liveness_endpoint"] == "http://0.0.0.0:9091/healthz"
    memo = call["memo"]
    assert isinstance(memo, OperatorMemo) and memo.metrics is METRICS
    assert memo.settings.poll_interval_s == 2.5


def test_namespaces_given_on_the_command_line(kopf_run: list[dict[str, Any]]) -> None:
    operator_main.main(["-n", "pouw", "--namespace", "lab"])
    (call,) = kopf_run
    assert (call["clusterwide"], call["namespaces"]) == (False, ["pouw", "lab"])


def test_one_namespace_or_all_not_both() -> None:
    with pytest.raises(SystemExit):
        operator_main.parse_args(["-n", "pouw", "--all-namespaces"])


def test_the_handler_modules_are_imported() -> None:
    pouwnode = "pouw_operator.handlers.pouwnode"
    assert operator_main.import_handlers((pouwnode,)) == [pouwnode]
    assert operator_main.import_handlers() == list(operator_main.HANDLER_MODULES)


def test_a_missing_handler_module_is_an_import_error_naming_it() -> None:
    with pytest.raises(ImportError, match=r"pouw_operator\.absent") as error:
        operator_main.import_handlers(("pouw_operator.handlers.pouwnode", "pouw_operator.absent"))
    assert error.value.name == "pouw_operator.absent"


@pytest.mark.parametrize(
    ("raw", "level"), [("debug", "DEBUG"), ("WARNING", "WARNING"), ("", "INFO")]
)
def test_the_log_level_comes_from_pouw_log_level(raw: str, level: str) -> None:
    assert OperatorSettings.from_env({"POUW_LOG_LEVEL": raw}).log_level == level


def test_an_unknown_log_level_names_the_variable() -> None:
    with pytest.raises(ValueError, match="POUW_LOG_LEVEL='loud' is invalid"):
        OperatorSettings.from_env({"POUW_LOG_LEVEL": "loud"})
