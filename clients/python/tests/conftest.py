"""Fixtures: a real ``dspy-storage serve`` from the workspace's binary, on the embedded backend
and (when an AWS endpoint is configured) on ``--backend aws --create``.

* ``DSPY_STORAGE_BIN``: the binary (default ``<repo>/target/debug/dspy-storage``).
* ``AWS_ENDPOINT_URL``: the local AWS (LocalStack); without it the AWS
  backend is skipped, unless ``DSPY_STORAGE_REQUIRE_AWS=1``, where that is a failure.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Iterator

import httpx
import pytest

REPO = Path(__file__).resolve().parents[3]
FIXTURES = REPO / "tests" / "fixtures"


def binary() -> Path:
    path = Path(os.environ.get("DSPY_STORAGE_BIN") or REPO / "target" / "debug" / "dspy-storage")
    if not path.exists():
        pytest.fail(f"{path} not found: cargo build -p dspy-storage-cli (or set DSPY_STORAGE_BIN)")
    return path


def aws_configured() -> bool:
    return bool(os.environ.get("AWS_ENDPOINT_URL", "").strip())


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Each AWS-backend test that ran and passed adds a line to ``DSPY_STORAGE_AWS_TEST_LOG``
    (when set), so the test command can say how many AWS tests ran."""
    path = os.environ.get("DSPY_STORAGE_AWS_TEST_LOG")
    if path and report.when == "call" and report.passed and "[aws" in report.nodeid:
        with open(path, "a") as f:
            f.write(f"python-client\t{report.nodeid}\taws\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One ``dspy-storage serve`` process; ``stop()``/``start()`` keep its data (same data dir,
    table and bucket), and ``start()`` takes a new port unless told to keep it."""

    def __init__(self, backend: str, workdir: Path, extra: list[str] | None = None) -> None:
        self.backend = backend
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.extra = list(extra or [])
        self.name = f"dspy-py-{uuid.uuid4().hex[:12]}"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / "serve.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def args(self) -> list[str]:
        args = [str(binary())]
        if self.backend == "aws":
            args += ["--backend", "aws", "--table", self.name, "--bucket", self.name, "--create"]
        else:
            args += ["--data-dir", str(self.data_dir)]
        return args + ["serve", "--addr", f"127.0.0.1:{self.port}", *self.extra]

    def start(self, timeout: float = 90.0) -> "Server":
        env = {k: v for k, v in os.environ.items() if not k.startswith("DSPY_STORAGE_")}
        env.setdefault("AWS_REGION", "us-east-1")
        env.setdefault("AWS_ACCESS_KEY_ID", "test")
        env.setdefault("AWS_SECRET_ACCESS_KEY", "test")
        env["RUST_LOG"] = "warn"
        log = open(self.log, "ab")
        self.proc = subprocess.Popen(self.args(), stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dspy-storage serve exited: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"dspy-storage serve did not answer within {timeout} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def backends() -> list:
    params = [pytest.param("embedded", id="embedded")]
    if aws_configured():
        params.append(pytest.param("aws", id="aws"))
    elif os.environ.get("DSPY_STORAGE_REQUIRE_AWS") == "1":
        params.append(pytest.param("aws", id="aws"))  # fails in the fixture, not skipped
    else:
        params.append(
            pytest.param("aws", id="aws", marks=pytest.mark.skip(reason="no AWS_ENDPOINT_URL"))
        )
    return params


@pytest.fixture(scope="session", params=backends())
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "aws" and not aws_configured():
        pytest.fail("DSPY_STORAGE_REQUIRE_AWS=1 but no AWS endpoint is configured")
    return request.param


@pytest.fixture(scope="session")
def server(backend: str) -> Iterator[Server]:
    """A server shared by the tests of one backend (tests use their own signature names)."""
    with tempfile.TemporaryDirectory(prefix=f"dspy-py-{backend}-") as d:
        s = Server(backend, Path(d)).start()
        yield s
        s.stop()


@pytest.fixture
def make_server(backend: str, tmp_path: Path) -> Iterator:
    """Starts servers of this test's own (to stop, corrupt or configure): ``make_server(*flags)``."""
    started: list[Server] = []

    def make(*extra: str) -> Server:
        s = Server(backend, tmp_path / f"server{len(started)}", list(extra))
        s.workdir.mkdir(parents=True, exist_ok=True)
        started.append(s)
        return s.start()

    yield make
    for s in started:
        s.stop()


@pytest.fixture
def sig() -> str:
    """A signature name no other test uses."""
    return f"py.Sig{uuid.uuid4().hex[:10]}"


@pytest.fixture
def storage(server: Server, tmp_path: Path):
    from dspy_storage import ProgramStorage

    with ProgramStorage(server.url, cache_dir=tmp_path / "cache") as s:
        yield s


class Counting(httpx.BaseTransport):
    """A real transport that counts (and records) the requests sent through it."""

    def __init__(self, inner: httpx.BaseTransport | None = None) -> None:
        self.inner = inner or httpx.HTTPTransport()
        self.requests: list[tuple[str, str]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append((request.method, request.url.path))
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


@pytest.fixture
def counting() -> Counting:
    return Counting()


def run_module(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m dspy_storage ...`` in a child process."""
    return subprocess.run(
        [sys.executable, "-m", "dspy_storage", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )
