"""Reading and writing Kubernetes objects as plain dicts, through the `kubernetes` client.

`Kube` is synchronous (the tests' harness uses it as is); `AsyncKube`, what handlers get in
their memo, runs it in a worker thread over one shared client, so a handler never blocks kopf's
event loop. Every failure is a KubeError carrying the API's status and reason.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes import client, config

from pouw_operator.errors import OperatorError

Body = dict[str, Any]
"""A Kubernetes object as JSON: apiVersion, kind, metadata, spec, status..."""

MERGE_PATCH = "application/merge-patch+json"
REQUEST_TIMEOUT_S = 10.0
UNREACHABLE = 0


@dataclass(frozen=True)
class Kind:
    api_version: str
    kind: str
    plural: str

    @property
    def resource(self) -> tuple[str, str, str]:
        """kopf's (group, version, plural) of the kind, what its decorators take."""
        group, _, version = self.api_version.rpartition("/")
        return group, version, self.plural

    def path(
        self, namespace: str | None, name: str | None = None, subresource: str | None = None
    ) -> str:
        root = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        parts = [root]
        if namespace:
            parts.append(f"namespaces/{namespace}")
        parts.append(self.plural)
        if name:
            parts.append(name)
            if subresource:
                parts.append(subresource)
        return "/".join(parts)


SECRET = Kind("v1", "Secret", "secrets")
CONFIGMAP = Kind("v1", "ConfigMap", "configmaps")
SERVICE = Kind("v1", "Service", "services")
POD = Kind("v1", "Pod", "pods")
EVENT = Kind("v1", "Event", "events")
STATEFULSET = Kind("apps/v1", "StatefulSet", "statefulsets")
POUWNODE = Kind("pouw.network/v1alpha1", "PoUWNode", "pouwnodes")
MLTASK = Kind("pouw.network/v1alpha1", "MLTask", "mltasks")
STAKE = Kind("pouw.network/v1alpha1", "Stake", "stakes")
KINDS: Mapping[str, Kind] = {
    kind.plural: kind
    for kind in (SECRET, CONFIGMAP, SERVICE, POD, EVENT, STATEFULSET, POUWNODE, MLTASK, STAKE)
}
"""By plural name."""


class KubeError(OperatorError):
    """`status` is the HTTP status (0: no answer); `reason` the API's word (NotFound,
    AlreadyExists, Conflict, Invalid...); `message` its sentence."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        """409: the object exists already, or it changed under a write."""
        return self.status == 409

    @property
    def retryable(self) -> bool:
        """Trying again later may succeed: no answer, a conflict, throttling, a server error."""
        return self.status in (UNREACHABLE, 409, 429) or self.status >= 500


class Kube:
    """CRUD of objects as dicts over one ApiClient; patches are JSON merge patches (a list in
    the patch replaces the list in the object, so the result is what the builder said)."""

    def __init__(self, api: client.ApiClient, timeout: float = REQUEST_TIMEOUT_S) -> None:
        self.api = api
        self.timeout = timeout

    def get(self, kind: Kind, namespace: str, name: str) -> Body | None:
        try:
            return self._call("GET", kind.path(namespace, name))
        except KubeError as error:
            if error.not_found:
                return None
            raise

    def list(self, kind: Kind, namespace: str | None) -> list[Body]:
        items = self._call("GET", kind.path(namespace)).get("items") or []
        return [item for item in items if isinstance(item, dict)]

    def create(self, kind: Kind, body: Mapping[str, Any]) -> Body:
        namespace = body.get("metadata", {}).get("namespace")
        return self._call("POST", kind.path(namespace), body=dict(body))

    def patch(
        self,
        kind: Kind,
        namespace: str,
        name: str,
        patch: Mapping[str, Any],
        subresource: str | None = None,
    ) -> Body:
        return self._call(
            "PATCH",
            kind.path(namespace, name, subresource),
            body=dict(patch),
            content_type=MERGE_PATCH,
        )

    def delete(self, kind: Kind, namespace: str, name: str) -> bool:
        """False when there was nothing to delete."""
        try:
            self._call("DELETE", kind.path(namespace, name))
        except KubeError as error:
            if error.not_found:
                return False
            raise
        return True

    def _call(
        self,
        method: str,
        path: str,
        *,
        body: Body | None = None,
        content_type: str = "application/json",
    ) -> Body:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        serialized = self.api.param_serialize(
            method=method,
            resource_path=path,
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        http_method, url, header_params, payload, post_params = serialized
        try:
            response = self.api.call_api(
                http_method,
                url,
                header_params=header_params,
                body=payload,
                post_params=post_params,
                _request_timeout=self.timeout,
            )
            data = response.read()  # type: ignore[no-untyped-call]
        except client.ApiException as error:
            raise KubeError(error.status or UNREACHABLE, "Unreachable", str(error.reason)) from None
        except Exception as error:  # urllib3's connection errors: no answer from the server
            raise KubeError(UNREACHABLE, "Unreachable", f"{method} {url}: {error!r}") from None
        answer = _json(data)
        if not 200 <= response.status < 300:
            raise KubeError(
                response.status,
                str(answer.get("reason") or response.reason or ""),
                str(answer.get("message") or data[:300].decode(errors="replace")),
            )
        return answer


def _json(data: bytes | None) -> Body:
    try:
        value = json.loads(data or b"{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


ApiClientFactory = Callable[[], client.ApiClient]


def in_cluster_or_kubeconfig() -> client.ApiClient:
    """The pod's service account in a cluster, else the current kubeconfig context (an
    operator run from a laptop): the same order kopf logs in with."""
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    return client.ApiClient(configuration)


class AsyncKube:
    """Kube's calls for code on kopf's event loop, each in a worker thread, over one ApiClient
    that `api_client` makes on first use (not before: `pouw-operator --help` needs no cluster)
    and every thread shares."""

    def __init__(self, api_client: ApiClientFactory = in_cluster_or_kubeconfig) -> None:
        self._factory = api_client
        self._client: client.ApiClient | None = None
        self._lock = threading.Lock()  # handlers reach the client from worker threads

    def sync(self) -> Kube:
        """The blocking Kube over the same client, for code that runs in a worker thread."""
        with self._lock:
            if self._client is None:
                self._client = self._factory()
            return Kube(self._client)

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()  # type: ignore[no-untyped-call]
                self._client = None

    async def get(self, kind: Kind, namespace: str, name: str) -> Body | None:
        return await asyncio.to_thread(self.sync().get, kind, namespace, name)

    async def create(self, kind: Kind, body: Mapping[str, Any]) -> Body:
        return await asyncio.to_thread(self.sync().create, kind, body)

    async def patch(
        self,
        kind: Kind,
        namespace: str,
        name: str,
        changes: Mapping[str, Any],
        subresource: str | None = None,
    ) -> Body:
        sync = self.sync()
        return await asyncio.to_thread(sync.patch, kind, namespace, name, changes, subresource)

    async def ensure(self, kind: Kind, body: Mapping[str, Any]) -> None:
        """Create the object unless one of its name exists; never overwrite it."""
        try:
            await self.create(kind, body)
        except KubeError as error:
            if not error.conflict:
                raise

    async def create_or_patch(
        self, kind: Kind, desired: Mapping[str, Any], owned: Mapping[str, Any]
    ) -> Body:
        """Create `desired`, or patch the existing object with `owned` (the fields the operator
        manages, a part of `desired`) unless it already holds them. Creating first costs one
        call for a new object, the common case when resources arrive; an existing one costs one
        more."""
        metadata = desired["metadata"]
        namespace, name = metadata["namespace"], metadata["name"]
        try:
            return await self.create(kind, desired)
        except KubeError as error:
            if not error.conflict:
                raise
        existing = await self.get(kind, namespace, name)
        if existing is None:  # deleted between our two calls: the next reconcile creates it
            raise KubeError(409, "Conflict", f"{kind.kind} {name} came and went")
        if holds(existing, owned):
            return existing
        return await self.patch(kind, namespace, name, owned)


def holds(actual: object, wanted: object) -> bool:
    """Whether `actual` has every field of `wanted`. Dicts may carry more keys and lists must
    match element-wise, so the API server's defaults (imagePullPolicy, protocol...) do not
    count as drift, but an env variable removed from `wanted` does."""
    if isinstance(wanted, Mapping):
        return isinstance(actual, Mapping) and all(
            key in actual and holds(actual[key], value) for key, value in wanted.items()
        )
    if isinstance(wanted, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(wanted)
            and all(holds(a, w) for a, w in zip(actual, wanted, strict=True))
        )
    return actual == wanted
