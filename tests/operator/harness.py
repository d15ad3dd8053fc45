"""The real operator against an in-memory Kubernetes API server, in this process.

- `Emulator` (tests/support/emulator.py): kmock's KubernetesEmulator with uids, generations and
  garbage collection by ownerReferences; no controllers run (a StatefulSet makes no pods).
- `OperatorCluster`: runs the emulator in one thread and kopf (`kopf.operator`, the handler
  modules imported by `pouw_operator.main.import_handlers`) in another, each with its own event
  loop; tests talk to the emulator over HTTP with the same `kubernetes` client the operator
  uses, so they stay synchronous. Start, stop and restart the operator with any OperatorSettings.

What the handlers use reaches them as in production, through kopf's memo: each start builds an
`OperatorMemo` (pouw_operator.memo, its `create` the seam) with the run's settings, the
cluster's own OperatorMetrics and a Kubernetes client aimed at the emulator.

kopf logs in through `_login_to_the_emulator`, a login handler registered with kopf's default
registry when this module is imported (tests only).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any, TypeVar

import kopf
from kubernetes import client

from pouw_operator.kube import KINDS, Body, Kind, Kube
from pouw_operator.main import import_handlers
from pouw_operator.memo import OperatorMemo
from pouw_operator.metrics import OperatorMetrics
from pouw_operator.settings import OperatorSettings
from tests.support.emulator import Emulator, EmulatorServer, Loop, merge_patch, watches

T = TypeVar("T")

DEFAULT_NAMESPACE = "pouw-test"
WAIT_TIMEOUT_S = 10.0
START_TIMEOUT_S = 10.0
FAST_SETTINGS = OperatorSettings(poll_interval_s=0.2, metrics_port=0, liveness_port=0)
"""What the operator runs with unless a test says otherwise: node_url is set by the cluster
to a local port nobody listens on, so every node API call fails at once."""

# --- the operator -----------------------------------------------------------------------

_emulator_url: dict[str, str] = {}
"""Where kopf logs in: the running OperatorCluster's emulator (one at a time)."""


@kopf.on.login()
def _login_to_the_emulator(**_: Any) -> kopf.ConnectionInfo:
    if "url" not in _emulator_url:
        raise kopf.LoginError("no emulator is running (tests/operator/harness.py)")
    return kopf.ConnectionInfo(
        server=_emulator_url["url"], insecure=True, default_namespace="default"
    )


def fast_kopf_settings() -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    settings.scanning.disabled = True  # no CRD watching: the emulator has no CRDs
    settings.posting.enabled = False  # no Kubernetes Events: less noise, fewer requests
    settings.watching.reconnect_backoff = 0.05
    settings.watching.connect_timeout = 2
    settings.networking.error_backoffs = [0.1, 0.2, 0.5]
    settings.execution.default_backoff = 0.5
    settings.persistence.consistency_timeout = 1.0
    settings.queueing.exit_timeout = 0.5
    settings.background.cancellation_polling = 0.1
    settings.process.ultimate_exiting_timeout = 1.0
    return settings


class OperatorRun:
    """One run of kopf.operator in a thread of its own, until stop()."""

    def __init__(self, namespace: str, memo: OperatorMemo) -> None:
        self._loop = Loop("kopf")
        self._stop: asyncio.Event | None = None
        self.ready = threading.Event()
        self.memo = memo
        self._running = self._loop.submit(self._run(namespace))
        if not self.ready.wait(START_TIMEOUT_S):
            self.stop()
            raise TimeoutError("the operator did not start")

    async def _run(self, namespace: str) -> None:
        self._stop = asyncio.Event()
        await kopf.operator(
            standalone=True,
            namespaces=[namespace],
            settings=fast_kopf_settings(),
            stop_flag=self._stop,
            ready_flag=self.ready,
            memo=self.memo,
        )

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.loop.call_soon_threadsafe(self._stop.set)
        try:
            self._running.result(timeout=START_TIMEOUT_S)
        finally:
            self._loop.close()
            self.memo.close()

    @property
    def alive(self) -> bool:
        return not self._running.done()


# --- what tests use ---------------------------------------------------------------------


class OperatorCluster:
    """An emulated API server, a namespace in it, and the operator watching that namespace.

    `kind_plural` is a plural from pouw_operator.kube.KINDS ("pouwnodes", "mltasks",
    "stakes", "secrets", "services", "statefulsets", "pods", "events"). Bodies are dicts; a
    body's apiVersion, kind and metadata.namespace are filled in when missing.
    """

    def __init__(self, namespace: str = DEFAULT_NAMESPACE) -> None:
        self.namespace = namespace
        self.server = EmulatorServer()
        self.url = self.server.url
        self.kube = Kube(client.ApiClient(client.Configuration(host=self.url)))
        self.metrics = OperatorMetrics()
        self.settings = replace(FAST_SETTINGS, node_url=unused_local_url())
        self._operator: OperatorRun | None = None

    # operator lifecycle

    def start_operator(self, settings: OperatorSettings | None = None, **changes: Any) -> None:
        """Start the operator with `settings` (default: the last ones, else FAST_SETTINGS
        with no node answering), with `changes` applied: `start_operator(node_url=url)`."""
        if self._operator is not None:
            raise RuntimeError("the operator runs already; restart_operator() instead")
        self.settings = replace(settings or self.settings, **changes)
        url = self.url
        memo = OperatorMemo.create(
            self.settings,
            self.metrics,
            api_client=lambda: client.ApiClient(client.Configuration(host=url)),
        )
        import_handlers()  # as main() does
        _emulator_url["url"] = self.url
        seen = len(self.server.requests())
        self._operator = OperatorRun(self.namespace, memo)
        self.wait_for(
            lambda: any(watches(r, "pouwnodes") for r in self.server.requests()[seen:]),
            START_TIMEOUT_S,
            "the operator to watch PoUWNodes",
        )

    def stop_operator(self) -> None:
        if self._operator is not None:
            operator, self._operator = self._operator, None
            operator.stop()

    def restart_operator(self, settings: OperatorSettings | None = None, **changes: Any) -> None:
        self.stop_operator()
        self.start_operator(settings, **changes)

    @property
    def operator_running(self) -> bool:
        return self._operator is not None and self._operator.alive

    def close(self) -> None:
        try:
            self.stop_operator()
        finally:
            _emulator_url.pop("url", None)
            self.kube.api.close()  # type: ignore[no-untyped-call]
            self.server.close()

    # objects

    def create(self, kind_plural: str, body: Mapping[str, Any]) -> Body:
        kind = _kind(kind_plural)
        return self.kube.create(kind, self._complete(kind, body))

    def patch(
        self,
        kind_plural: str,
        name: str,
        patch: Mapping[str, Any],
        subresource: str | None = None,
    ) -> Body:
        """A JSON merge patch; `subresource` "status" or "scale" like kubectl's."""
        return self.kube.patch(_kind(kind_plural), self.namespace, name, patch, subresource)

    def delete(self, kind_plural: str, name: str) -> bool:
        return self.kube.delete(_kind(kind_plural), self.namespace, name)

    def get(self, kind_plural: str, name: str) -> Body | None:
        return self.kube.get(_kind(kind_plural), self.namespace, name)

    def list(self, kind_plural: str) -> list[Body]:
        return self.kube.list(_kind(kind_plural), self.namespace)

    def wait_for(
        self,
        predicate: Callable[[], T | None],
        timeout: float = WAIT_TIMEOUT_S,
        message: str = "",
    ) -> T:
        """Poll `predicate` until it returns something truthy, and return that; fail after
        `timeout` seconds, also when the operator died meanwhile."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if self._operator is not None and not self._operator.alive:
                raise AssertionError(f"the operator stopped while waiting for {message!r}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {message!r}")
            time.sleep(0.02)

    def wait_for_object(
        self,
        kind_plural: str,
        name: str,
        predicate: Callable[[Body], object] = bool,
        timeout: float = WAIT_TIMEOUT_S,
    ) -> Body:
        """The object once it exists and `predicate(object)` holds."""

        def check() -> Body | None:
            found = self.get(kind_plural, name)
            return found if found is not None and predicate(found) else None

        return self.wait_for(check, timeout, f"{kind_plural}/{name} to satisfy {predicate}")

    def wait_until_gone(self, kind_plural: str, name: str, timeout: float = WAIT_TIMEOUT_S) -> None:
        self.wait_for(
            lambda: self.get(kind_plural, name) is None, timeout, f"{kind_plural}/{name} gone"
        )

    def _complete(self, kind: Kind, body: Mapping[str, Any]) -> Body:
        metadata = {"namespace": self.namespace, **(body.get("metadata") or {})}
        return {"apiVersion": kind.api_version, "kind": kind.kind, **body, "metadata": metadata}


def _kind(plural: str) -> Kind:
    try:
        return KINDS[plural]
    except KeyError:
        raise ValueError(f"unknown kind {plural!r}: one of {', '.join(KINDS)}") from None


def unused_local_url() -> str:
    """http://127.0.0.1:<port> where nothing listens (the port was free a moment ago)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@contextlib.contextmanager
def operator_cluster(
    namespace: str = DEFAULT_NAMESPACE,
    settings: OperatorSettings | None = None,
    start: bool = True,
) -> Iterator[OperatorCluster]:
    """An OperatorCluster, its operator started (unless `start` is False), closed after."""
    cluster = OperatorCluster(namespace)
    try:
        if start:
            cluster.start_operator(settings)
        yield cluster
        leftovers = cluster.server.errors()
        assert not leftovers, f"the API server failed inside: {leftovers!r}"
    finally:
        cluster.close()


def quiet_kopf_logs(level: int = logging.WARNING) -> None:
    logging.getLogger("kopf").setLevel(level)


__all__: Sequence[str] = (
    "DEFAULT_NAMESPACE",
    "FAST_SETTINGS",
    "Emulator",
    "OperatorCluster",
    "merge_patch",
    "operator_cluster",
    "unused_local_url",
)
