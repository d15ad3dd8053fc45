"""A dataset file comes from the node's dataset directory or an allowed host, and nowhere else:
each attack here is a file or a URL that a task could name, refused with its reason and
without stalling the reader (every read runs against a deadline)."""

from __future__ import annotations

import hashlib
import os
import re
import stat
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pouw.ml.dataset_files import DatasetError, DatasetIntegrityError, DatasetSource
from pouw.spec import DatasetSpec

DEADLINE_S = 10.0
CAP = 64 * 1024


def spec(name: str, data: bytes = b"", *, url: str = "", digest: str | None = None) -> DatasetSpec:
    pinned = digest or hashlib.sha256(data).hexdigest()
    return DatasetSpec(
        name=name, format="npz", url=url, sha256=pinned, rows=1, features=1, classes=1
    )


def read(source: DatasetSource, dataset: DatasetSpec) -> bytes:
    """`source.read`, which must answer (bytes or a refusal) within the deadline."""
    pool = ThreadPoolExecutor(1)
    try:
        return pool.submit(source.read, dataset).result(timeout=DEADLINE_S)
    finally:
        pool.shutdown(wait=False)  # a read stalled past the deadline fails the test, not the run


def test_a_regular_file_in_the_directory_is_read(tmp_path: Path) -> None:
    (tmp_path / "ok.npz").write_bytes(b"data")
    assert read(DatasetSource(tmp_path), spec("ok.npz", b"data")) == b"data"


def test_a_fifo_is_refused_without_stalling(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.npz")  # no writer: a blocking open or read would never return
    with pytest.raises(DatasetError, match=re.escape("'pipe.npz' is not a regular file")):
        read(DatasetSource(tmp_path), spec("pipe.npz"))


def test_a_device_in_the_directory_is_refused_unread(tmp_path: Path) -> None:
    try:  # /dev/zero's twin: reading it would never end
        os.mknod(tmp_path / "zero.npz", stat.S_IFCHR | 0o600, os.makedev(1, 5))
    except PermissionError:
        pytest.skip("making a device node needs CAP_MKNOD")
    with pytest.raises(DatasetError, match=re.escape("'zero.npz' is not a regular file")):
        read(DatasetSource(tmp_path), spec("zero.npz"))


@pytest.mark.parametrize("target", ["/etc/passwd", "/dev/zero"])
def test_a_symlink_out_of_the_directory_is_refused(tmp_path: Path, target: str) -> None:
    (tmp_path / "link.npz").symlink_to(target)
    with pytest.raises(DatasetError, match=re.escape("cannot open dataset 'link.npz'")):
        read(DatasetSource(tmp_path), spec("link.npz"))


@pytest.mark.parametrize("name", ["../x.npz", "/dev/zero", "/etc/passwd", "sub/x.npz", ".."])
def test_a_path_is_not_a_file_name(tmp_path: Path, name: str) -> None:
    (tmp_path.parent / "x.npz").write_bytes(b"outside")
    with pytest.raises(DatasetError, match="is not a file name in the dataset directory"):
        read(DatasetSource(tmp_path / "datasets"), spec(name, b"outside"))


def test_a_file_over_the_cap_is_refused_by_its_size_before_reading(tmp_path: Path) -> None:
    data = b"x" * (CAP + 1)
    (tmp_path / "big.npz").write_bytes(data)
    with pytest.raises(DatasetError, match=f"has {CAP + 1} bytes, over the {CAP} cap"):
        read(DatasetSource(tmp_path, max_bytes=CAP), spec("big.npz", data))
    (tmp_path / "fits.npz").write_bytes(data[:CAP])
    assert len(read(DatasetSource(tmp_path, max_bytes=CAP), spec("fits.npz", data[:CAP]))) == CAP


def test_a_wrong_sha256_is_refused(tmp_path: Path) -> None:
    (tmp_path / "data.npz").write_bytes(b"data")
    with pytest.raises(DatasetIntegrityError, match="the task spec pins " + "0" * 64):
        read(DatasetSource(tmp_path), spec("data.npz", digest="0" * 64))


class Server:
    """A local HTTP server whose answer each test sets; it counts the requests it gets."""

    def __init__(self) -> None:
        self.answer: Callable[[BaseHTTPRequestHandler], None] = lambda handler: None
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def do_GET(self) -> None:
                outer.requests += 1
                outer.answer(self)

            def log_message(self, format: str, *args: object) -> None:
                del format, args

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http.daemon_threads = True
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def url(self, path: str = "/data.npz") -> str:
        return f"http://127.0.0.1:{self.http.server_address[1]}{path}"


@pytest.fixture
def server() -> Iterator[Server]:
    running = Server()
    yield running
    running.http.shutdown()
    running.http.server_close()


def body(data: bytes, length: int | None = None) -> Callable[[BaseHTTPRequestHandler], None]:
    def answer(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        if length is not None:
            handler.send_header("Content-Length", str(length))
        handler.end_headers()
        handler.wfile.write(data)

    return answer


ALLOWED = frozenset({"127.0.0.1"})


def test_a_download_from_an_allowed_host_is_read_and_hashed(server: Server) -> None:
    server.answer = body(b"remote data", len(b"remote data"))
    source = DatasetSource(allowed_hosts=ALLOWED)
    assert read(source, spec("remote.npz", b"remote data", url=server.url())) == b"remote data"
    with pytest.raises(DatasetIntegrityError, match="pins"):
        read(source, spec("remote.npz", url=server.url(), digest="0" * 64))


@pytest.mark.parametrize("allowed", [frozenset(), frozenset({"data.example.org"})])
def test_a_host_off_the_allow_list_is_never_asked(server: Server, allowed: frozenset[str]) -> None:
    server.answer = body(b"remote data", len(b"remote data"))
    with pytest.raises(
        DatasetError, match=re.escape("'127.0.0.1' is not on this node's allow-list")
    ):
        read(DatasetSource(allowed_hosts=allowed), spec("r.npz", b"remote data", url=server.url()))
    assert server.requests == 0


ENDLESS = 256 * 1024 * 1024
"""What the endless stream offers: a reader without the cap would hold all of it."""
SOCKET_BUFFERS = 32 * 1024 * 1024
"""More than loopback TCP buffers take before a writer whose reader hung up fails."""


def test_an_endless_stream_is_cut_at_the_cap_as_it_streams(server: Server) -> None:
    sent, finished = [0], threading.Event()

    def endless(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.end_headers()  # no Content-Length: the body ends when the server says so
        chunk = b"z" * 65536
        try:
            while sent[0] < ENDLESS:
                handler.wfile.write(chunk)
                sent[0] += len(chunk)
        except OSError:
            pass  # the reader hung up
        finally:
            finished.set()

    server.answer = endless
    source = DatasetSource(allowed_hosts=ALLOWED, max_bytes=CAP)
    with pytest.raises(DatasetError, match=f"over the {CAP} byte cap"):
        read(source, spec("endless.npz", url=server.url()))
    assert finished.wait(DEADLINE_S)
    assert sent[0] < SOCKET_BUFFERS, f"the reader took {sent[0]} bytes before hanging up"


def test_a_redirect_off_the_allow_list_is_refused(server: Server) -> None:
    def elsewhere(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(302)
        handler.send_header("Location", "http://localhost:1/data.npz")
        handler.end_headers()

    server.answer = elsewhere
    with pytest.raises(
        DatasetError, match=re.escape("redirect to http://localhost:1/data.npz leaves")
    ):
        read(DatasetSource(allowed_hosts=ALLOWED), spec("moved.npz", url=server.url()))
