"""`pouw bench operator`: how fast the operator turns PoUWNode resources into children, and
what holding them costs it.

The real `pouw-operator` command runs as a child process against an in-memory Kubernetes API
server in this process, logging in through a kubeconfig file as it would from a laptop. That
server is test code (tests/support/emulator.py, over kmock, a development dependency): it is
loaded from the source checkout this module sits in, so the bench runs from an editable install
with the dev extra (`make bench`) and says so in one line anywhere else (an image).

NODES PoUWNode resources are created in one burst; for each, the latency runs from its create
call returning to its StatefulSet (the last child made) appearing in the API server.

- reconcile_p95_ms (and p50, max): over the NODES resources.
- rss_mb: the operator process's resident memory once it holds them all; rss_idle_mb before
  the first one.
- Baseline, same run: api_children_ms is the median time this process takes to create one
  node's four children (two Secrets, a Service, a StatefulSet) through the same API server;
  reconcile_ratio = reconcile_p50_ms / api_children_ms: what the operator adds to the bare
  API writes (watch delivery, kopf's queueing, building manifests).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import psutil
from kubernetes import client

from pouw_operator.kube import POUWNODE, SECRET, SERVICE, STATEFULSET, Body, Kube

Report = Callable[[str], None]

NODES = 100
NAMESPACE = "bench"
BASELINE_ROUNDS = 20
READY_TIMEOUT_S = 60.0
RECONCILE_TIMEOUT_S = 120.0
TARGET_P95_MS = 1000
POLL_S = 0.01
"""How often this process looks for new StatefulSets: often enough for the figures, seldom
enough not to starve the API server's thread of the GIL."""
TARGET_RSS_MB = 200

CHECKOUT = Path(__file__).resolve().parents[3]
"""The source checkout of an editable install (node/pouw/bench/ is three levels down)."""
EMULATOR = CHECKOUT / "tests" / "support" / "emulator.py"
EMULATOR_MODULE = "pouw_bench_emulator"
NEEDS_DEV = (
    "pouw bench operator needs the dev extra and a source checkout: "
    "pip install -e '.[dev]' (make bench)"
)
_OURS = ("pouw", "pouw_operator", "tests")
"""Packages whose absence is a bug, not a missing dev extra."""


class Unavailable(Exception):
    """The in-memory API server cannot be loaded here; the message says what to install."""


class ApiServer(Protocol):
    """What the bench uses of tests/support/emulator.py's EmulatorServer."""

    url: str

    def watched(self, plural: str) -> bool: ...

    def names(self, kind: str) -> set[str]: ...

    def close(self) -> None: ...


def load_emulator(path: Path | None = None) -> Callable[[], ApiServer]:
    """The EmulatorServer class of tests/support/emulator.py (default: the checkout's), loaded
    from its file without changing sys.path. Raises Unavailable when the file or kmock is
    missing."""
    path = EMULATOR if path is None else path
    spec = importlib.util.spec_from_file_location(EMULATOR_MODULE, path)
    if not path.is_file() or spec is None or spec.loader is None:
        raise Unavailable(NEEDS_DEV)
    module = importlib.util.module_from_spec(spec)
    sys.modules[EMULATOR_MODULE] = module  # as `import` does: class decorators look it up
    try:
        spec.loader.exec_module(module)
    except ModuleNotFoundError as error:
        sys.modules.pop(EMULATOR_MODULE, None)
        if (error.name or "").split(".")[0] in _OURS:
            raise
        raise Unavailable(NEEDS_DEV) from None
    except BaseException:
        sys.modules.pop(EMULATOR_MODULE, None)
        raise
    server: Callable[[], ApiServer] = module.EmulatorServer
    return server


def _kubeconfig(url: str, directory: Path) -> Path:
    path = directory / "kubeconfig"
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "emulator", "cluster": {"server": url}}],
                "users": [{"name": "bench", "user": {"token": "bench"}}],
                "contexts": [
                    {
                        "name": "emulator",
                        "context": {"cluster": "emulator", "user": "bench", "namespace": NAMESPACE},
                    }
                ],
                "current-context": "emulator",
            }
        )
    )
    return path


def _unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _operator_command() -> list[str]:
    installed = shutil.which("pouw-operator")
    if installed is not None:
        return [installed, "-n", NAMESPACE]
    return [sys.executable, "-c", "from pouw_operator.main import main; main()", "-n", NAMESPACE]


def _pouwnode(index: int) -> Body:
    return {
        "apiVersion": POUWNODE.api_version,
        "kind": POUWNODE.kind,
        "metadata": {"name": f"bench-{index}", "namespace": NAMESPACE},
        "spec": {
            "role": "miner",
            "replicas": 1,
            "stake": 100,
            "miningIntensity": 1,
            "resources": {"cpu": "1", "memory": "2Gi", "gpu": 0},
            "storage": {"size": "1Gi"},
            "chainId": "pouw-devnet",
            "security": True,
        },
    }


def _api_children_ms(kube: Kube) -> float:
    """Median time to create one node's four children straight through the API."""
    samples = []
    for index in range(BASELINE_ROUNDS):
        name = f"baseline-{index}"
        metadata = {"name": name, "namespace": NAMESPACE}
        started = time.perf_counter()
        kube.create(SECRET, {"apiVersion": "v1", "kind": "Secret", "metadata": metadata})
        kube.create(
            SECRET,
            {"apiVersion": "v1", "kind": "Secret", "metadata": {**metadata, "name": name + "-k"}},
        )
        kube.create(SERVICE, {"apiVersion": "v1", "kind": "Service", "metadata": metadata})
        kube.create(
            STATEFULSET, {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": metadata}
        )
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def _wait(
    condition: Callable[[], bool],
    timeout: float,
    what: str,
    operator: subprocess.Popen[bytes],
    log: Path,
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if operator.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(
                f"benchmark: the operator exited with {operator.returncode}:\n{tail}"
            )
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:]
            raise TimeoutError(f"benchmark: {what} not reached in {timeout:.0f} s:\n{tail}")
        time.sleep(POLL_S)


def run(report: Report) -> dict[str, Any]:
    """Raises Unavailable (before starting anything) without the dev extra and a checkout."""
    server = load_emulator()()
    workdir = Path(tempfile.mkdtemp(prefix="pouw-bench-operator-"))
    kube = Kube(client.ApiClient(client.Configuration(host=server.url)))
    env = {
        **os.environ,
        "KUBECONFIG": str(_kubeconfig(server.url, workdir)),
        "POUW_OPERATOR_METRICS_PORT": "0",
        "POUW_OPERATOR_LIVENESS_PORT": "0",
        # Node APIs answer nowhere here; a closed local port fails fast instead of DNS.
        "POUW_OPERATOR_NODE_URL": f"http://127.0.0.1:{_unused_port()}",
    }
    log_path = workdir / "operator.log"
    log = log_path.open("wb")
    operator = subprocess.Popen(_operator_command(), env=env, stdout=log, stderr=log)
    try:
        baseline_ms = _api_children_ms(kube)
        report(f"baseline: one node's four children through the API in {baseline_ms:.1f} ms")
        _wait(
            lambda: server.watched(POUWNODE.plural),
            READY_TIMEOUT_S,
            "the operator watching PoUWNodes",
            operator,
            log_path,
        )
        process = psutil.Process(operator.pid)
        rss_idle = process.memory_info().rss / 2**20
        report(f"operator up (pid {operator.pid}, {rss_idle:.0f} MB); creating {NODES} PoUWNodes")
        cpu_before = sum(process.cpu_times()[:2])
        burst_started = time.perf_counter()
        created: dict[str, float] = {}
        for index in range(NODES):
            body = _pouwnode(index)
            kube.create(POUWNODE, body)
            created[body["metadata"]["name"]] = time.perf_counter()
        seen: dict[str, float] = {}
        next_report = [time.perf_counter() + 5]

        def all_reconciled() -> bool:
            now = time.perf_counter()
            for name in server.names(STATEFULSET.kind) & (created.keys() - seen.keys()):
                seen[name] = now
            if now > next_report[0]:
                report(f"{len(seen)}/{NODES} StatefulSets")
                next_report[0] = now + 5
            return len(seen) == NODES

        _wait(all_reconciled, RECONCILE_TIMEOUT_S, f"{NODES} StatefulSets", operator, log_path)
        latencies = sorted((seen[name] - created[name]) * 1000 for name in created)
        rss = process.memory_info().rss / 2**20
        operator_cpu_s = sum(process.cpu_times()[:2]) - cpu_before
        burst_s = time.perf_counter() - burst_started
        report(f"{NODES} reconciled; operator holds them in {rss:.0f} MB")
    finally:
        operator.terminate()
        try:
            operator.wait(timeout=10)
        except subprocess.TimeoutExpired:
            operator.kill()
        log.close()
        kube.api.close()  # type: ignore[no-untyped-call]
        server.close()
        shutil.rmtree(workdir, ignore_errors=True)
    p50 = statistics.median(latencies)
    return {
        "bench": "operator",
        "nodes": NODES,
        "reconcile_p95_ms": round(latencies[int(0.95 * (NODES - 1))], 1),
        "reconcile_p50_ms": round(p50, 1),
        "reconcile_max_ms": round(latencies[-1], 1),
        "api_children_ms": round(baseline_ms, 2),
        "reconcile_ratio": round(p50 / baseline_ms, 2),
        "burst_s": round(burst_s, 2),
        "operator_cpu_s": round(operator_cpu_s, 2),
        "rss_mb": round(rss, 1),
        "rss_idle_mb": round(rss_idle, 1),
        "target_reconcile_p95_ms": TARGET_P95_MS,
        "target_rss_mb": TARGET_RSS_MB,
    }
