"""An in-memory Kubernetes API server for the operator's tests and `pouw bench operator`.

kmock's KubernetesEmulator (objects over HTTP: create, merge/JSON patch, delete, list, watch)
plus what the operator relies on and kmock leaves out: uid, resourceVersion, generation (bumped
when spec changes), creationTimestamp, and garbage collection of objects whose owners
(ownerReferences) are gone. No controllers run: a StatefulSet makes no pods, and its status is
whatever a test patches into it.

Test code, not product code: kmock is a development dependency. The tests import this module
as `tests.support.emulator`; `pouw bench operator` loads this file from the source checkout
(node/pouw/bench/operator.py), so an image built without the dev extra has neither.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import threading
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import attrs
import kmock

from pouw_operator.kube import MLTASK, POUWNODE, STAKE, Kind

START_TIMEOUT_S = 10.0


def _custom_resource(
    kind: Kind, shortname: str, subresources: set[str]
) -> dict[str, kmock.ResourceInfo]:
    """One of the operator's custom resources: namespaced, with every verb."""
    info = kmock.ResourceInfo(
        kind=kind.kind,
        singular=kind.kind.lower(),
        namespaced=True,
        shortnames={shortname},
        subresources=subresources,
        verbs={"create", "delete", "get", "list", "patch", "update", "watch"},
    )
    return {f"{kind.api_version}/{kind.plural}": info}


RESOURCES: Mapping[str, kmock.ResourceInfo] = {
    **_custom_resource(POUWNODE, "pn", {"status", "scale"}),
    **_custom_resource(MLTASK, "mlt", {"status"}),
    **_custom_resource(STAKE, "stk", {"status"}),
    # kopf waits for these two in discovery before it watches anything (its "backbone").
    "v1/namespaces": kmock.ResourceInfo(kind="Namespace", singular="namespace", namespaced=False),
    "apiextensions.k8s.io/v1/customresourcedefinitions": kmock.ResourceInfo(
        kind="CustomResourceDefinition", singular="customresourcedefinition", namespaced=False
    ),
    "v1/secrets": kmock.ResourceInfo(kind="Secret", singular="secret", namespaced=True),
    "v1/services": kmock.ResourceInfo(kind="Service", singular="service", namespaced=True),
    "v1/pods": kmock.ResourceInfo(kind="Pod", singular="pod", namespaced=True),
    "v1/events": kmock.ResourceInfo(kind="Event", singular="event", namespaced=True),
    "apps/v1/statefulsets": kmock.ResourceInfo(
        kind="StatefulSet",
        singular="statefulset",
        namespaced=True,
        subresources={"status", "scale"},
    ),
}


# --- the API server ---------------------------------------------------------------------


@attrs.define(kw_only=True)
class Emulator(kmock.KubernetesEmulator):
    _versions: Iterator[int] = attrs.field(factory=lambda: itertools.count(1), init=False)
    history: list[kmock.Request] = attrs.field(factory=list, init=False)
    """Every request answered, oldest first (kmock's own log is cut short, see _handle)."""

    async def _handle(self, request: kmock.Request) -> Any:
        # kmock matches each request against its reactions by scanning the whole request log,
        # which makes every request O(requests so far); we keep the log ourselves instead.
        self.history.append(request)
        del self._requests[:-1]
        if request.resource is not None:
            if request.action == kmock.action.CREATE and isinstance(request.data, dict):
                self._stamp_new(request)
            elif request.action == kmock.action.UPDATE and request.name is not None:
                self._stamp_change(request)
        response = await super()._handle(request)
        deleted = request.action == kmock.action.DELETE and request.name is not None
        if deleted and 200 <= response.status < 300:
            await self._collect_garbage()
        return response

    def _stamp_new(self, request: kmock.Request) -> None:
        metadata = request.data.setdefault("metadata", {})
        if request.namespace and not metadata.get("namespace"):
            metadata["namespace"] = request.namespace
        metadata["uid"] = str(uuid.uuid4())
        metadata["resourceVersion"] = str(next(self._versions))
        metadata["generation"] = 1
        metadata["creationTimestamp"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def _stamp_change(self, request: kmock.Request) -> None:
        version = str(next(self._versions))
        if isinstance(request.data, list):  # a JSON patch
            request.data.append(
                {"op": "add", "path": "/metadata/resourceVersion", "value": version}
            )
            return
        if not isinstance(request.data, dict):
            return
        metadata = request.data.setdefault("metadata", {})
        metadata["resourceVersion"] = version
        if request.subresource == "status" or "spec" not in request.data:
            return
        assert request.resource is not None and request.name is not None
        current = self.objects._objects.get((request.resource, request.namespace, request.name))
        if current is None or current.deleted:
            return
        old = current.raw
        if merge_patch(old.get("spec"), request.data["spec"]) != old.get("spec"):
            metadata["generation"] = int(old.get("metadata", {}).get("generation") or 1) + 1

    async def _collect_garbage(self) -> None:
        """Delete, transitively, every object all of whose owners are gone."""
        while True:
            async with self._lock:
                alive = {
                    obj.raw.get("metadata", {}).get("uid")
                    for obj in self.objects.values()
                    if not obj.deleted
                }
                orphans = [
                    (key, obj)
                    for key, obj in self.objects.items()
                    if not obj.deleted
                    and (owners := obj.raw.get("metadata", {}).get("ownerReferences"))
                    and not any(owner.get("uid") in alive for owner in owners)
                ]
                for (resource, _, _), obj in orphans:
                    raw = obj.raw
                    obj.delete()
                    await self._buses[resource].put({"type": "DELETED", "object": raw})
            if not orphans:
                return


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: what a JSON merge patch makes of `target`."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def watches(request: kmock.Request, plural: str) -> bool:
    """Whether `request` is a watch of the resource `plural`."""
    return (
        request.action == kmock.action.WATCH
        and request.resource is not None
        and request.resource.plural == plural
    )


class Loop:
    """An event loop in a daemon thread, for coroutines started from the test's thread."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def submit(self, coroutine: Any) -> concurrent.futures.Future[Any]:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        if not self.thread.is_alive():
            self.loop.close()


class EmulatorServer:
    """The emulator on 127.0.0.1 (a free port), served from its own thread."""

    def __init__(self) -> None:
        self._loop = Loop("kmock")
        self._stop: asyncio.Event | None = None
        started: concurrent.futures.Future[tuple[Emulator, str]] = concurrent.futures.Future()
        self._serving = self._loop.submit(self._serve(started))
        self.emulator, self.url = started.result(timeout=START_TIMEOUT_S)

    async def _serve(self, started: concurrent.futures.Future[tuple[Emulator, str]]) -> None:
        self._stop = asyncio.Event()
        try:
            async with Emulator() as emulator, kmock.Server(emulator) as server:
                for resource, info in RESOURCES.items():
                    emulator.resources[resource] = info
                started.set_result((emulator, str(server.url).rstrip("/")))
                await self._stop.wait()
        except BaseException as error:
            if not started.done():
                started.set_exception(error)
            raise

    def requests(self) -> list[kmock.Request]:
        """Every request the server answered so far, oldest first."""
        return list(self.emulator.history)

    def watched(self, plural: str) -> bool:
        """Whether anyone has asked to watch the resource `plural` (e.g. "pouwnodes")."""
        return any(watches(request, plural) for request in self.requests())

    def names(self, kind: str) -> set[str]:
        """Names of the objects of `kind` (e.g. "StatefulSet") the server holds, read in this
        process without HTTP."""
        while True:
            try:
                objects = list(self.emulator.objects.values())
                break
            except RuntimeError:  # the server's thread changed the dict meanwhile
                continue
        return {
            obj.raw["metadata"]["name"]
            for obj in objects
            if not obj.deleted and obj.raw.get("kind") == kind
        }

    def errors(self) -> list[Exception]:
        """Failures inside the emulator other than the API errors it answers with (404,
        409...): a malformed patch, a bug. A test should leave none."""
        return [
            error for error in self.emulator.errors if not isinstance(error, kmock.KubernetesError)
        ]

    def close(self) -> None:
        if self._stop is not None:
            self._loop.loop.call_soon_threadsafe(self._stop.set)
        with contextlib.suppress(Exception):
            self._serving.result(timeout=5)
        self._loop.close()
