"""
Shared pytest fixtures. The important one: a tiny HTTP server on 127.0.0.1 standing in for the
Hugging Face hub, so every download path is tested for real (status codes, Content-Length,
Range resume, truncated bodies) without touching the network. And `data_dir`, the small dataset
the training tests (test_train.py, test_fsdp.py) run on.
"""

import contextlib
import http.server
import os
import threading
import time

import pytest
import torch

import prepare

if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest.ini runs the tests in 2 worker processes (pytest-xdist), one per core of the machine
    # CI runs on: each worker, and every script it starts, then computes on one thread, instead of
    # two threads each fighting over the same two cores.
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


class FakeHub:
    """What the server serves and what it saw. Tests fill `files` and read `requests`."""

    def __init__(self):
        self.files = {}  # url path ("/a/b.bin") -> bytes
        self.requests = []  # (method, path, Range header or None), in order
        self.truncate = set()  # paths whose body is cut in half while Content-Length promises all
        self.status = {}  # path -> HTTP status to answer instead of the file (e.g. 404, 500)
        self.delay = {}  # path -> seconds to wait before answering (a slow download)
        self.url = None

    def count(self, path):
        return sum(1 for _, p, _ in self.requests if p == path)


def make_handler(hub):
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep pytest output clean
            pass

        def do_GET(self):
            path = self.path.split("?")[0]
            range_header = self.headers.get("Range")
            hub.requests.append(("GET", path, range_header))
            time.sleep(hub.delay.get(path, 0))
            if path in hub.status:
                self.send_error(hub.status[path])
                return
            if path not in hub.files:
                self.send_error(404)
                return
            data = hub.files[path]
            start = 0
            if range_header and range_header.startswith("bytes="):
                start = int(range_header[len("bytes="):].split("-")[0])
                if start >= len(data):
                    self.send_error(416)
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            if path in hub.truncate:
                body = body[: len(body) // 2]  # the connection "drops" half-way
            self.wfile.write(body)
            self.wfile.flush()
            if path in hub.truncate:
                self.close_connection = True

    return Handler


@pytest.fixture
def fake_hub(monkeypatch, tmp_path):
    """A FakeHub served on 127.0.0.1; HF_ENDPOINT points at it and the download cache is in tmp_path."""
    with serving(FakeHub()) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")  # a proxy in the environment must not intercept
        monkeypatch.setenv("GPT_CACHE_DIR", str(tmp_path / "cache"))
        yield hub


@contextlib.contextmanager
def serving(hub):
    """Serve a FakeHub on 127.0.0.1 (a free port, in hub.url) until the block ends."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), make_handler(hub))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A small char-level dataset 'tiny' (the first 20,000 characters of Shakespeare)."""
    directory = tmp_path_factory.mktemp("data")
    text = prepare.read_text_file(prepare.SHAKESPEARE_PATH)[:20_000]
    prepare.prepare_text(text, "tiny", "char", data_dir=directory)
    return directory
