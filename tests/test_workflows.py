"""The GitHub Actions workflows parse and run what they claim (`make test`, then the kind e2e
suite), every make target they call exists, and the e2e suite they run skips with one line
naming what is missing on a machine without Docker or kind (and fails with POUW_E2E_REQUIRE=1,
as the workflow sets it)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))
ACTION_REF = re.compile(r"^[\w.-]+/[\w./-]+@[\w.-]+$")


def load(path: Path) -> dict[str, Any]:
    workflow = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(workflow, dict), path
    return workflow


def steps_of(job: dict[str, Any]) -> list[dict[str, Any]]:
    steps = job["steps"]
    assert isinstance(steps, list) and steps
    return steps


def runs(job: dict[str, Any]) -> str:
    return "\n".join(str(step.get("run", "")) for step in steps_of(job))


def uses(job: dict[str, Any]) -> list[str]:
    return [str(step["uses"]) for step in steps_of(job) if "uses" in step]


def test_there_is_a_ci_workflow() -> None:
    assert [path.name for path in WORKFLOWS] == ["ci.yml"]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda path: path.name)
def test_every_job_is_bounded_and_every_step_named(path: Path) -> None:
    workflow = load(path)
    # YAML 1.1 reads a bare `on` key as True.
    assert workflow.get("on", workflow.get(True)), "no triggers"
    for name, job in workflow["jobs"].items():
        assert job["runs-on"] == "ubuntu-latest", name
        assert 0 < int(job["timeout-minutes"]) <= 90, name
        for step in steps_of(job):
            assert step.get("name"), f"{name}: a step without a name: {step}"
            assert ("uses" in step) != ("run" in step), f"{name}: {step['name']}"
        for action in uses(job):
            assert ACTION_REF.match(action), f"{name}: {action} is not owner/repo@ref"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda path: path.name)
def test_the_make_targets_called_exist(path: Path) -> None:
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([\w./-]+):", makefile, flags=re.MULTILINE))
    called = {
        target
        for job in load(path)["jobs"].values()
        for target in re.findall(r"\bmake\s+([\w./-]+)", runs(job))
    }
    assert called and called <= targets, called - targets


def test_ci_runs_make_test_then_the_e2e_suite_on_kind() -> None:
    jobs = load(REPO / ".github" / "workflows" / "ci.yml")["jobs"]
    assert set(jobs) == {"test", "e2e"}
    test, e2e = jobs["test"], jobs["e2e"]
    assert "actions/setup-python@v5" in uses(test)
    assert "apt-get install" in runs(test) and "prometheus" in runs(test)
    assert re.search(r"^make test$", runs(test), flags=re.MULTILINE)

    assert e2e["needs"] == "test"
    assert {"actions/checkout@v4", "helm/kind-action@v1", "azure/setup-helm@v4"} <= set(uses(e2e))
    suite = next(step for step in steps_of(e2e) if step.get("run") == "make e2e")
    assert suite["env"]["POUW_E2E_REQUIRE"] == "1", "a CI run must not pass by skipping"
    upload = next(
        step
        for step in steps_of(e2e)
        if step.get("uses", "").startswith("actions/upload-artifact@")
    )
    assert upload["if"] == "failure()"
    assert upload["with"]["path"] == suite["env"]["POUW_E2E_LOGS"]


def test_make_e2e_runs_the_e2e_suite() -> None:
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^e2e: \$\(STAMP\)\n\t\$\(BIN\)/pytest e2e\b", makefile, flags=re.MULTILINE)


def run_e2e_without_tools(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """`pytest e2e` with a PATH holding only a `docker` whose engine is down."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text("#!/bin/sh\necho 'Cannot connect to the Docker daemon' >&2\nexit 1\n")
    docker.chmod(0o755)
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith("POUW_E2E_")
    }
    environment.update(PATH=str(bin_dir), **env)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "e2e", "-q", "-p", "no:cacheprovider"],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


WHAT_IS_MISSING = "no Docker engine (docker info failed), kind not found, kubectl not found"


def test_the_e2e_suite_skips_with_one_line_naming_what_is_missing(tmp_path: Path) -> None:
    done = run_e2e_without_tools(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    skipped = [line for line in done.stdout.splitlines() if line.startswith("SKIPPED")]
    assert len(skipped) == 1, done.stdout
    assert re.fullmatch(
        rf"SKIPPED \[1\] e2e/test_kind\.py:\d+: e2e skipped: {re.escape(WHAT_IS_MISSING)}",
        skipped[0],
    ), skipped
    assert re.search(r"^1 skipped in ", done.stdout, flags=re.MULTILINE), done.stdout


def test_the_e2e_suite_fails_when_ci_requires_it(tmp_path: Path) -> None:
    done = run_e2e_without_tools(tmp_path, POUW_E2E_REQUIRE="1")
    assert done.returncode != 0
    assert f"e2e cannot run (POUW_E2E_REQUIRE=1): {WHAT_IS_MISSING}" in done.stdout
