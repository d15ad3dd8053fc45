"""The Dockerfile's promises, read from its instructions (no Docker engine here: the image itself
is built and run by the e2e suite): two stages, the final one a slim Python with the builder's
venv and nothing else, a non-root user that the operator's pods run as, the ports and the
health check the node serves, and a torch variant chosen by a build argument."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pouw_operator.builders.statefulset import DATA_DIR, RUN_AS
from pouw_operator.settings import API_PORT, P2P_PORT

REPO = Path(__file__).resolve().parents[1]
BUILD_TOOLS = re.compile(r"\b(build-essential|gcc|g\+\+|make|cmake|clang|python3?-dev)\b")


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, instruction: str) -> list[str]:
        return [args for name, args in self.instructions if name == instruction]


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    found: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        pending += " " + stripped.removesuffix("\\").strip()
        if stripped.endswith("\\"):
            continue
        name, _, args = pending.strip().partition(" ")
        found.append((name.upper(), args.strip()))
        pending = ""
    assert not pending, "a continuation runs off the end"
    return found


def stages(text: str) -> tuple[dict[str, str], list[Stage]]:
    """The ARGs declared before the first FROM (usable in FROM lines) and the stages."""
    global_args: dict[str, str] = {}
    found: list[Stage] = []
    for name, args in instructions(text):
        if name == "FROM":
            words = args.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: global_args[m.group(1)], words[0])
            alias = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            found.append(Stage(base, alias))
        elif not found:
            assert name == "ARG", f"{name} before the first FROM"
            key, _, default = args.partition("=")
            global_args[key] = default
        else:
            found[-1].instructions.append((name, args))
    return global_args, found


@pytest.fixture(scope="module")
def dockerfile() -> list[Stage]:
    return stages((REPO / "Dockerfile").read_text("utf-8"))[1]


def test_two_stages_on_a_slim_python(dockerfile: list[Stage]) -> None:
    builder, final = dockerfile
    assert builder.name == "builder"
    assert final.name is None
    assert builder.base == final.base == "python:3.11-slim"


def test_the_torch_variant_is_a_build_argument(dockerfile: list[Stage]) -> None:
    builder = dockerfile[0]
    arguments = dict(args.partition("=")[::2] for args in builder.all("ARG"))
    assert arguments["TORCH_VARIANT"] == "cpu"
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))
    assert f"torch=={arguments['TORCH_VERSION']}" in pyproject["project"]["dependencies"]
    (install,) = [run for run in builder.all("RUN") if "torch==" in run]
    assert '"torch==${TORCH_VERSION}"' in install
    assert '--index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}"' in install


def test_the_final_stage_gets_the_venv_and_no_build_tools(dockerfile: list[Stage]) -> None:
    final = dockerfile[-1]
    assert final.all("COPY") == ["--from=builder /opt/venv /opt/venv"]
    assert final.all("ADD") == []
    for run in final.all("RUN"):
        assert "pip install" not in run
        assert not BUILD_TOOLS.search(run), run


def test_the_image_runs_as_the_user_the_pods_run_as(dockerfile: list[Stage]) -> None:
    final = dockerfile[-1]
    assert final.all("USER")[-1] == f"{RUN_AS}:{RUN_AS}"
    (create,) = [run for run in final.all("RUN") if "useradd" in run]
    assert f"groupadd --system --gid {RUN_AS} pouw" in create
    assert f"useradd --system --uid {RUN_AS} --gid {RUN_AS}" in create
    assert f"chown pouw:pouw /app {DATA_DIR}" in create
    assert final.all("WORKDIR") == ["/app"]
    assert final.all("VOLUME") == [json.dumps([DATA_DIR])]


def test_ports_health_check_and_command(dockerfile: list[Stage]) -> None:
    final = dockerfile[-1]
    assert [set(map(int, ports.split())) for ports in final.all("EXPOSE")] == [{P2P_PORT, API_PORT}]
    (check,) = final.all("HEALTHCHECK")
    options, _, command = check.partition(" CMD ")
    assert "--interval=" in options
    probe = json.loads(command)
    assert probe[:2] == ["python", "-c"]  # the slim image has no curl
    assert f"http://127.0.0.1:{API_PORT}/health" in probe[2]
    compile(probe[2], "HEALTHCHECK", "exec")
    assert final.all("ENTRYPOINT") == []
    assert json.loads(final.all("CMD")[-1]) == ["pouw", "node"]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))["project"]["scripts"]
    assert {"pouw", "pouw-operator"} <= set(scripts)  # the node's and the operator's commands


def test_the_build_context_leaves_out_what_the_image_does_not_need() -> None:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text("utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def ignored(path: str) -> bool:
        return any(fnmatch.fnmatch(path, pattern.removeprefix("**/")) for pattern in patterns)

    for path in (".venv", ".git", "tests", "e2e", ".pytest_cache", ".mypy_cache", "__pycache__"):
        assert ignored(path), path
    builder = stages((REPO / "Dockerfile").read_text("utf-8"))[1][0]
    for copy in builder.all("COPY"):
        for source in shlex.split(copy)[:-1]:
            assert not ignored(source), f"the Dockerfile copies {source}, .dockerignore drops it"
