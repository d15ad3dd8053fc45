"""The kind end-to-end suite's helpers and fixtures.

Every external command goes through `run` (a timeout, its output in the suite's log), every
wait through `wait_for` (a deadline, the last thing seen in the error). The fixtures make a
kind cluster (or reuse POUW_E2E_CLUSTER), build `pouw:dev` and load it into the cluster; the
steps in test_kind.py install the chart and drive it. A failed step dumps the namespace's
state and pod logs into the log folder and the report, and the steps after it are skipped.

Environment:
  POUW_E2E_CLUSTER   reuse this kind cluster (it is never deleted)
  POUW_E2E_KEEP=1    keep the cluster the suite created (and a failed release) for a look
  POUW_E2E_LOGS      where logs go (default: a new temporary folder, named in the report)
  POUW_E2E_BUILD=0   do not build pouw:dev; the local image is loaded as it is
  POUW_E2E_NETWORK   `chart` (default: the chart's network) or `examples`
                     (network.enabled=false, then examples/network.yaml)
  POUW_E2E_HELM_SET  extra `helm --set` values, e.g. network.resources.cpu=250m
  POUW_E2E_NODE_IMAGE  kind's node image (`kind create cluster --image`)
  POUW_E2E_TASK_TIMEOUT  seconds for the MLTask to complete (default 900)
  POUW_E2E_REQUIRE=1 a missing tool fails the run instead of skipping it (CI)
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import queue
import re
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import pytest

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "charts"
KIND_CONFIG = Path(__file__).resolve().parent / "kind-config.yaml"
NAMESPACE = "pouw"
RELEASE = "pouw"
OPERATOR = "pouw-operator"
"""The operator's Deployment and Service: the chart's fullname (`pouw`) plus -operator."""
IMAGE_REPOSITORY, IMAGE_TAG = "pouw", "dev"
IMAGE = f"{IMAGE_REPOSITORY}:{IMAGE_TAG}"
NODE_SELECTOR = "app.kubernetes.io/name=pouw-node"
"""Every node pod, StatefulSet and claim the operator makes (builders/naming.py: NAME_LABEL)."""
OPERATOR_SELECTOR = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=operator"

T = TypeVar("T")


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes"}


def env_seconds(name: str, default: float) -> float:
    raw = os.environ.get(name, "")
    return float(raw) if raw.strip() else default


# --- what the suite needs --------------------------------------------------------------------


def missing_tools() -> list[str]:
    """What this machine lacks for the suite, one phrase each; empty when it can run."""
    missing: list[str] = []
    docker = shutil.which("docker")
    if docker is None:
        missing.append("docker not found")
    else:
        try:
            subprocess.run(
                [docker, "info"],
                capture_output=True,
                timeout=30,
                check=True,
                stdin=subprocess.DEVNULL,
            )
        except (subprocess.SubprocessError, OSError):
            missing.append("no Docker engine (docker info failed)")
    for tool in ("kind", "kubectl"):
        if shutil.which(tool) is None:
            missing.append(f"{tool} not found")
    if shutil.which("helm") is None and importlib.util.find_spec("helm_python") is None:
        missing.append("neither helm nor helm-python-sdk found")
    return missing


# --- commands --------------------------------------------------------------------------------


@cache
def logs_dir() -> Path:
    """The suite's log folder: POUW_E2E_LOGS, else a fresh temporary one."""
    configured = os.environ.get("POUW_E2E_LOGS", "").strip()
    path = Path(configured) if configured else Path(tempfile.mkdtemp(prefix="pouw-e2e-"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def log(line: str) -> None:
    """One line in commands.log (and on stdout, which pytest shows for a failed step)."""
    stamped = f"{time.strftime('%H:%M:%S')} {line}"
    print(stamped)
    with (logs_dir() / "commands.log").open("a", encoding="utf-8") as out:
        out.write(stamped + "\n")


class CommandError(RuntimeError):
    """A command exited non-zero or ran past its timeout; the message carries its stderr."""


def run(
    *command: str,
    timeout: float,
    input: str | None = None,
    cwd: Path = REPO,
    output: Path | None = None,
) -> str:
    """Runs a command with a timeout and returns its stdout. With `output`, stdout and stderr
    go to that file instead (long builds), and "" is returned."""
    shown = " ".join(command)
    log(f"$ {shown}")
    try:
        if output is not None:
            _run_into(command, cwd, timeout, output)
            return ""
        done = subprocess.run(
            command,
            cwd=cwd,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise CommandError(f"{shown}: still running after {timeout:.0f} s") from exc
    if done.returncode != 0:
        raise CommandError(f"{shown}: exit {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def _run_into(command: Sequence[str], cwd: Path, timeout: float, output: Path) -> None:
    shown = " ".join(command)
    with output.open("a", encoding="utf-8") as sink:
        sink.write(f"$ {shown}\n")
        sink.flush()
        code = subprocess.run(
            command,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            check=False,
        ).returncode
    if code != 0:
        tail = "\n".join(output.read_text(encoding="utf-8").splitlines()[-40:])
        raise CommandError(f"{shown}: exit {code} (log {output}):\n{tail}")


def kubectl(*args: str, timeout: float = 60, input: str | None = None) -> str:
    """kubectl against the suite's cluster (KUBECONFIG is set by the `cluster` fixture)."""
    return run("kubectl", *args, timeout=timeout, input=input)


def kubectl_json(*args: str, timeout: float = 60) -> Any:
    return json.loads(kubectl(*args, "-o", "json", timeout=timeout))


def table(text: str) -> tuple[list[str], list[dict[str, str]]]:
    """`kubectl get`'s table: the header's names and one dict per row (cells hold no blanks)."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return [], []
    header = lines[0].split()
    return header, [dict(zip(header, line.split(), strict=True)) for line in lines[1:]]


# --- waiting ---------------------------------------------------------------------------------


class NotYet(Exception):
    """Raised by a check that is not met yet; its message says what was seen instead."""


class WaitTimeout(AssertionError):
    """A condition still unmet at its deadline."""


def wait_for(check: Callable[[], T | None], timeout: float, what: str, interval: float = 3.0) -> T:
    """Polls `check` until it returns something other than None or False, for at most
    `timeout` seconds. A NotYet or CommandError from `check` counts as not yet (the last one
    is in the timeout's message); any other exception ends the wait at once."""
    deadline = time.monotonic() + timeout
    log(f"waiting up to {timeout:.0f} s for {what}")
    last = "not checked yet"
    while True:
        try:
            result = check()
        except (NotYet, CommandError) as exc:
            last = str(exc)
        else:
            if result is not None and result is not False:
                log(f"done: {what}")
                return result
            last = repr(result)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise WaitTimeout(f"{what}: not within {timeout:.0f} s; last seen: {last}")
        time.sleep(min(interval, remaining))


@contextlib.contextmanager
def port_forward(target: str, remote_port: int, timeout: float = 30) -> Iterator[int]:
    """`kubectl port-forward` of `target` (pod/x, svc/y) to a free local port, for the `with`
    block; yields the local port."""
    stderr = (logs_dir() / "port-forward.log").open("a", encoding="utf-8")
    command = ["kubectl", "-n", NAMESPACE, "port-forward", target, f":{remote_port}"]
    log(f"$ {' '.join(command)} &")
    process = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr, text=True
    )
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)

    threading.Thread(target=pump, name="port-forward", daemon=True).start()
    try:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or process.poll() is not None:
                raise CommandError(f"{' '.join(command)}: no forwarding port within {timeout} s")
            with contextlib.suppress(queue.Empty):
                found = re.search(r"127\.0\.0\.1:(\d+)", lines.get(timeout=min(1.0, remaining)))
                if found:
                    yield int(found.group(1))
                    return
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        stderr.close()


# --- helm: the binary where there is one, else Helm's Go SDK through helm-python-sdk ------------


@contextlib.contextmanager
def helm_sdk(action: str) -> Iterator[Any]:
    """A helm-python-sdk Config for the namespace; its errors become CommandErrors."""
    import helm_python

    log(f"helm-python-sdk: {action}")
    try:
        with helm_python.Config(namespace=NAMESPACE) as config:
            yield config
    except helm_python.HelmError as exc:
        raise CommandError(f"helm {action}: {exc}") from exc


def helm_install(values: Sequence[str], timeout: float) -> None:
    """`helm install pouw charts/ -n pouw --create-namespace --set ... --wait`."""
    settings = ",".join(values)
    helm = shutil.which("helm")
    if helm is not None:
        run(
            helm, "install", RELEASE, str(CHART), "-n", NAMESPACE, "--create-namespace",
            "--set", settings, "--wait", "--timeout", f"{int(timeout)}s",
            timeout=timeout + 60,
        )  # fmt: skip
        return
    import helm_python

    with helm_sdk(f"install {RELEASE} {CHART} -n {NAMESPACE} --set {settings} --wait") as sdk:
        sdk.install(
            str(CHART),
            RELEASE,
            helm_python.parse_set_string(settings),
            namespace=NAMESPACE,
            create_namespace=True,
            wait="watcher",
            timeout=int(timeout),
        )


def helm_uninstall(timeout: float) -> None:
    """`helm uninstall pouw -n pouw --wait`."""
    helm = shutil.which("helm")
    if helm is not None:
        run(
            helm, "uninstall", RELEASE, "-n", NAMESPACE, "--wait", "--timeout", f"{int(timeout)}s",
            timeout=timeout + 60,
        )  # fmt: skip
        return
    with helm_sdk(f"uninstall {RELEASE} -n {NAMESPACE} --wait") as sdk:
        sdk.uninstall(RELEASE, wait="watcher", timeout=int(timeout))


def helm_releases() -> list[str]:
    """The release names in the namespace."""
    helm = shutil.which("helm")
    if helm is not None:
        listed = json.loads(run(helm, "list", "-n", NAMESPACE, "-o", "json", timeout=60))
        return [str(item["name"]) for item in listed or []]
    with helm_sdk(f"list -n {NAMESPACE}") as sdk:
        return [str(item["name"]) for item in sdk.list()]


# --- diagnostics -----------------------------------------------------------------------------


def _capture(*args: str, timeout: float = 60) -> str:
    try:
        return kubectl(*args, timeout=timeout)
    except CommandError as exc:
        return f"({exc})\n"


def dump_cluster_state(step: str) -> str:
    """Writes the namespace's objects, events, pod descriptions and every pod's log into
    <logs>/<step>/; returns a summary for the report."""
    folder = logs_dir() / step
    folder.mkdir(parents=True, exist_ok=True)
    overview = _capture(
        "-n", NAMESPACE, "get",
        "pouwnodes,mltasks,stakes,statefulsets,deployments,pods,pvc,services,networkpolicies",
        "-o", "wide",
    )  # fmt: skip
    (folder / "overview.txt").write_text(overview, encoding="utf-8")
    (folder / "nodes.txt").write_text(_capture("get", "nodes", "-o", "wide"), encoding="utf-8")
    (folder / "resources.yaml").write_text(
        _capture("-n", NAMESPACE, "get", "pouwnodes,mltasks,stakes,statefulsets", "-o", "yaml"),
        encoding="utf-8",
    )
    events = _capture("-n", NAMESPACE, "get", "events", "--sort-by=.lastTimestamp")
    (folder / "events.txt").write_text(events, encoding="utf-8")
    (folder / "describe-pods.txt").write_text(
        _capture("-n", NAMESPACE, "describe", "pods", timeout=120), encoding="utf-8"
    )
    operator_log = ""
    try:
        pods = kubectl("-n", NAMESPACE, "get", "pods", "-o", "name").split()
    except CommandError:
        pods = []
    for pod in pods:
        name = pod.removeprefix("pod/")
        text = _capture("-n", NAMESPACE, "logs", pod, "--all-containers", "--tail=5000")
        previous = _capture("-n", NAMESPACE, "logs", pod, "--all-containers", "--previous")
        (folder / f"{name}.log").write_text(text, encoding="utf-8")
        if not previous.startswith("("):
            (folder / f"{name}.previous.log").write_text(previous, encoding="utf-8")
        if name.startswith(OPERATOR):
            operator_log = text
    tail = "\n".join(operator_log.splitlines()[-40:])
    recent_events = "\n".join(events.splitlines()[-25:])
    return (
        f"full dump: {folder}\n\n{overview}\n-- recent events --\n{recent_events}\n"
        f"\n-- operator log (tail) --\n{tail}\n"
    )


# --- a suite skipped whole is a pass: `pytest e2e` exits 0 then, not 5 (no tests collected) -

SKIPPED_MODULES: list[str] = []


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.skipped and report.nodeid.endswith(".py"):
        SKIPPED_MODULES.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED and SKIPPED_MODULES:
        session.exitstatus = pytest.ExitCode.OK


# --- step bookkeeping: a failed step dumps the cluster, and the steps after it are skipped --

FAILED_STEP = pytest.StashKey[str]()
CLUSTER_UP = threading.Event()
"""Set while the suite's cluster exists (so a failure report can dump it)."""


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.failed and call.when in {"setup", "call"}:
        if item.parent is not None:
            item.parent.stash.setdefault(FAILED_STEP, item.name)
        if CLUSTER_UP.is_set():
            summary = dump_cluster_state(item.name)
            report.sections.append((f"e2e: cluster state after {item.name}", summary))
        report.sections.append(("e2e: logs", f"commands and dumps: {logs_dir()}"))
    return report


def pytest_runtest_setup(item: pytest.Item) -> None:
    failed = item.parent.stash.get(FAILED_STEP, None) if item.parent is not None else None
    if failed is not None:
        pytest.skip(f"an earlier step failed: {failed}")


# --- fixtures --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cluster:
    name: str
    kubeconfig: Path
    created: bool


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """A kind cluster from kind-config.yaml with a unique name (or POUW_E2E_CLUSTER), and
    KUBECONFIG pointing at it for every command; deleted at the end unless POUW_E2E_KEEP=1
    or it was given. The kubeconfig lives apart from the logs (CI uploads those)."""
    given = os.environ.get("POUW_E2E_CLUSTER", "").strip()
    name = given or f"pouw-e2e-{secrets.token_hex(3)}"
    kubeconfig = Path(tempfile.mkdtemp(prefix="pouw-e2e-kube-")) / "kubeconfig"
    previous = os.environ.get("KUBECONFIG")
    try:
        if given:
            kubeconfig.write_text(run("kind", "get", "kubeconfig", "--name", name, timeout=60))
        else:
            node_image = os.environ.get("POUW_E2E_NODE_IMAGE", "").strip()
            CLUSTER_UP.set()  # from here on a failure leaves something to dump and delete
            run(
                "kind", "create", "cluster", "--name", name, "--config", str(KIND_CONFIG),
                "--kubeconfig", str(kubeconfig), "--wait", "180s",
                *(["--image", node_image] if node_image else []),
                timeout=600,
            )  # fmt: skip
        kubeconfig.chmod(0o600)
        os.environ["KUBECONFIG"] = str(kubeconfig)
        CLUSTER_UP.set()
        kubectl("wait", "--for=condition=Ready", "nodes", "--all", "--timeout=180s", timeout=240)
        yield Cluster(name, kubeconfig, created=not given)
    finally:
        if CLUSTER_UP.is_set() and request.session.testsfailed > 0:
            with contextlib.suppress(CommandError):
                run("kind", "export", "logs", str(logs_dir() / "kind"), "--name", name, timeout=300)
        CLUSTER_UP.clear()
        if given or env_flag("POUW_E2E_KEEP"):
            log(f"kept kind cluster {name} (KUBECONFIG={kubeconfig})")
        else:
            with contextlib.suppress(CommandError):
                run("kind", "delete", "cluster", "--name", name, timeout=300)
            shutil.rmtree(kubeconfig.parent, ignore_errors=True)
        if previous is None:
            os.environ.pop("KUBECONFIG", None)
        else:
            os.environ["KUBECONFIG"] = previous


@pytest.fixture(scope="module")
def image(cluster: Cluster) -> str:
    """`docker build -t pouw:dev .` (CPU torch) and `kind load docker-image pouw:dev`."""
    if os.environ.get("POUW_E2E_BUILD", "1").strip() != "0":
        run(
            "docker", "build", "-t", IMAGE, "--build-arg", "TORCH_VARIANT=cpu", ".",
            timeout=1800, output=logs_dir() / "docker-build.log",
        )  # fmt: skip
    run("docker", "image", "inspect", IMAGE, timeout=60)
    run("kind", "load", "docker-image", IMAGE, "--name", cluster.name, timeout=900)
    return IMAGE


NETWORK_MODES = ("chart", "examples")


def network_mode() -> str:
    """Where the PoUWNodes come from: the chart's default network, or examples/network.yaml
    applied after a chart installed with network.enabled=false."""
    mode = os.environ.get("POUW_E2E_NETWORK", "chart").strip() or "chart"
    if mode not in NETWORK_MODES:
        raise pytest.UsageError(
            f"POUW_E2E_NETWORK={mode!r}: allowed are {', '.join(NETWORK_MODES)}"
        )
    return mode


def helm_values() -> list[str]:
    """The `--set` values of the install: the local image, never pulled, and the extras."""
    values = [
        f"image.repository={IMAGE_REPOSITORY}",
        f"image.tag={IMAGE_TAG}",
        "image.pullPolicy=Never",
    ]
    if network_mode() == "examples":
        values.append("network.enabled=false")
    else:
        # The chart's default is a private chain; this suite runs the public test chain, whose
        # genesis funds the pods at once (the names in NETWORK), as examples/network.yaml does.
        values.append("network.chainId=pouw-devnet")
    extra = os.environ.get("POUW_E2E_HELM_SET", "").strip()
    if extra:
        values.append(extra)
    return values


@pytest.fixture(scope="module")
def release(cluster: Cluster, image: str) -> Iterator[str]:
    """`helm install pouw charts/ -n pouw --create-namespace` with the local image, waiting
    for what Helm waits on. The uninstall is a step of its own (test_kind.py); on a given
    cluster a release left by a failed run is uninstalled and the namespace deleted, so the
    next run starts clean (unless POUW_E2E_KEEP=1)."""
    helm_install(helm_values(), timeout=600)
    yield RELEASE
    if cluster.created or env_flag("POUW_E2E_KEEP"):
        return
    with contextlib.suppress(CommandError):
        if RELEASE in helm_releases():
            helm_uninstall(timeout=300)
        if network_mode() == "examples":
            kubectl(
                "-n",
                NAMESPACE,
                "delete",
                "-f",
                str(REPO / "examples" / "network.yaml"),
                "--ignore-not-found",
            )
        kubectl(
            "delete", "namespace", NAMESPACE, "--ignore-not-found", "--timeout=300s", timeout=360
        )
