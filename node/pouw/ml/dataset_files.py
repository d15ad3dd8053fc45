"""Where a dataset file's bytes come from: the node's dataset directory, or a URL on the node's
allow-list; nowhere else.

A file is opened by its plain name relative to the directory without following a symlink and
without blocking (a FIFO answers at once), then must be a regular file no larger than the cap;
a download streams at most the cap, whatever its Content-Length says, and follows no redirect
off the allow-list. Either way the bytes must hash to the spec's sha256 before anyone parses
them.
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from http.client import HTTPMessage
from pathlib import Path
from typing import IO

from pouw.errors import PouwError
from pouw.spec import FILE_NAME, DatasetSpec

MAX_DATASET_BYTES = 256 * 1024 * 1024
DOWNLOAD_TIMEOUT_S = 60.0
CHUNK_BYTES = 1024 * 1024


class DatasetError(PouwError, ValueError):
    pass


class DatasetIntegrityError(DatasetError):
    pass


@dataclass(frozen=True)
class DatasetSource:
    """A node's dataset directory and the hosts it may download datasets from."""

    directory: Path | None = None
    """None: this node holds no dataset files (built-in sets only, or downloads)."""
    allowed_hosts: frozenset[str] = field(default_factory=frozenset)
    """Empty: no downloads (POUW_DATASET_HOSTS)."""
    max_bytes: int = MAX_DATASET_BYTES
    timeout_s: float = DOWNLOAD_TIMEOUT_S

    def read(self, spec: DatasetSpec) -> bytes:
        """The file's bytes, once they hash to the spec's sha256."""
        if spec.sha256 is None:
            raise DatasetError("a dataset file needs its sha256 in the task spec")
        raw = self._download(spec.url) if spec.url else self._open(spec.name)
        actual = hashlib.sha256(raw).hexdigest()
        if actual != spec.sha256:
            raise DatasetIntegrityError(
                f"dataset {spec.name!r} has sha256 {actual}, the task spec pins {spec.sha256}"
            )
        return raw

    def _open(self, name: str) -> bytes:
        if not FILE_NAME.fullmatch(name):
            raise DatasetError(f"{name!r} is not a file name in the dataset directory")
        if self.directory is None:
            raise DatasetError(f"dataset {name!r}: this node has no dataset directory")
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
        try:
            directory = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
            try:
                descriptor = os.open(name, flags, dir_fd=directory)
            finally:
                os.close(directory)
        except OSError as error:
            raise DatasetError(
                f"cannot open dataset {name!r} in {self.directory}: {error.strerror}"
            ) from None
        with os.fdopen(descriptor, "rb", buffering=0) as file:
            status = os.fstat(file.fileno())
            if not stat.S_ISREG(status.st_mode):
                raise DatasetError(f"dataset {name!r} is not a regular file")
            if status.st_size > self.max_bytes:
                raise DatasetError(
                    f"dataset {name!r} has {status.st_size} bytes, over the {self.max_bytes} cap"
                )
            return self._capped(file, name, deadline=None)

    def _download(self, url: str) -> bytes:
        host = urllib.parse.urlsplit(url).hostname
        if host is None or host not in self.allowed_hosts:
            raise DatasetError(
                f"dataset host {host!r} is not on this node's allow-list (POUW_DATASET_HOSTS)"
            )
        opener = urllib.request.build_opener(_AllowedRedirects(self.allowed_hosts))
        deadline = time.monotonic() + self.timeout_s
        try:
            with opener.open(url, timeout=self.timeout_s) as response:
                return self._capped(response, url, deadline)
        except (urllib.error.URLError, OSError) as error:
            raise DatasetError(f"cannot download dataset {url}: {error}") from None

    def _capped(self, stream: IO[bytes], where: str, deadline: float | None) -> bytes:
        """Read to the end, refusing more than the cap (or, for a download, past the
        deadline) as it comes: neither a size nor a Content-Length is trusted."""
        parts, total = [], 0
        while chunk := stream.read(min(CHUNK_BYTES, self.max_bytes + 1 - total)):
            parts.append(chunk)
            total += len(chunk)
            if total > self.max_bytes:
                raise DatasetError(f"dataset {where} is over the {self.max_bytes} byte cap")
            if deadline is not None and time.monotonic() > deadline:
                raise DatasetError(f"dataset {where} took over {self.timeout_s:.0f} s")
        return b"".join(parts)


class _AllowedRedirects(urllib.request.HTTPRedirectHandler):
    def __init__(self, allowed_hosts: frozenset[str]) -> None:
        self.allowed_hosts = allowed_hosts

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        if urllib.parse.urlsplit(newurl).hostname not in self.allowed_hosts:
            raise DatasetError(f"dataset redirect to {newurl} leaves the allow-list")
        return super().redirect_request(req, fp, code, msg, headers, newurl)
