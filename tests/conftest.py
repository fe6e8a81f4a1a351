"""Shared fixtures: embedded stores, the ASGI app, a real `fhircare serve` process and
the real HAPI FHIR JPA server (started once per session for tests marked `hapi`)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from fhircare.api.app import create_app
from fhircare.config import Settings
from fhircare.store.embedded import EmbeddedStore

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EmbeddedStore]:
    s = EmbeddedStore(tmp_path / "store")
    yield s
    s.close()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data=tmp_path / "data", base_url="http://testserver/fhir")


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout} s ({last})")


class ServerProcess:
    """`fhircare serve` in a subprocess on a free port."""

    def __init__(
        self, data: Path, env: dict[str, str] | None = None, port: int | None = None
    ) -> None:
        self.port = port or free_port()
        self.data = data
        self.root = f"http://127.0.0.1:{self.port}"
        self.base = f"{self.root}/fhir"
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None
        # the server's log goes to a file: a pipe nobody reads would fill and block it
        self.log_path = data.parent / f"serve-{self.port}.log"

    def log_text(self) -> str:
        """Everything the server logged so far (complete once it has stopped)."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def start(self) -> ServerProcess:
        self.data.parent.mkdir(parents=True, exist_ok=True)
        log_file = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fhircare",
                "serve",
                "--port",
                str(self.port),
                "--data",
                str(self.data),
            ],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )
        log_file.close()  # the child holds its own descriptor
        wait_http(f"{self.base}/metadata", 60, self.proc)
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path / "srv-data").start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def served_fhircare(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One real `fhircare serve` process on loopback per test module (definitions seeded),
    for tests that drive it through real FHIR clients (fhirpy, client-py)."""
    srv = ServerProcess(tmp_path_factory.mktemp("served") / "data").start()
    yield srv
    srv.stop()


# ---- the real HAPI FHIR JPA server ---------------------------------------------------------

# A free port unless one is asked for: a stray server on 8090 must not break the suite.
HAPI_PORT = int(os.environ.get("FHIRCARE_TEST_HAPI_PORT") or 0)


def start_hapi(profile: str, env_url: str, port: int = 0) -> Iterator[str]:
    """One `scripts/hapi` server of `profile` for the session (or the URL in `env_url`)."""
    external = os.environ.get(env_url)
    if external:
        wait_http(f"{external.rstrip('/')}/metadata", 30)
        yield external.rstrip("/")
        return
    for tool in ("java", "mvn"):
        if shutil.which(tool) is None:
            pytest.fail(
                f"'{tool}' is not installed: the HAPI tests need Java 17+ and Maven "
                f"(or set {env_url} to a running HAPI FHIR server)"
            )
    script = ROOT / "scripts" / "hapi"
    port = port or free_port()
    run = subprocess.run(
        [str(script), "start", str(port), profile], capture_output=True, text=True, timeout=1800
    )
    if run.returncode != 0:
        pytest.fail(
            f"scripts/hapi start failed ({run.returncode}):\n{run.stdout[-3000:]}\n"
            f"{run.stderr[-3000:]}"
        )
    try:
        yield f"http://127.0.0.1:{port}/fhir"
    finally:
        subprocess.run([str(script), "stop", str(port)], capture_output=True, timeout=120)


@pytest.fixture(scope="session")
def hapi_base_url() -> Iterator[str]:
    """HAPI with the official image's stock defaults (60 s search cache, ALPHANUMERIC client
    ids, 409 on a stale If-Match, no Subscription channel, no $export): what most tests see.
    Started once per session on first use; FHIRCARE_TEST_HAPI_URL points at one you run."""
    yield from start_hapi("stock", "FHIRCARE_TEST_HAPI_URL", HAPI_PORT)


@pytest.fixture(scope="session")
def hapi_recommended_url() -> Iterator[str]:
    """HAPI with the README's recommended settings: stock, plus rest-hook Subscriptions and
    Bulk Data export. Everything a client sees is stock (cache, ids, 409) except that
    Subscriptions become active and `$export` exists, so the tests that need a Subscription
    run here ("stock + rest-hook"). A second JVM, started only when a test asks for it
    (FHIRCARE_TEST_HAPI_RECOMMENDED_URL points at one you run)."""
    yield from start_hapi("recommended", "FHIRCARE_TEST_HAPI_RECOMMENDED_URL")


# ---- what the suite writes, for the conformance check --------------------------------------

PRODUCED: list[dict] = []
_original_commit = EmbeddedStore.commit


def _recording_commit(self, ops, meta=None):  # noqa: ANN001, ANN202 - mirrors EmbeddedStore.commit
    results = _original_commit(self, ops, meta)
    PRODUCED.extend(r.resource for r in results if r.resource is not None)
    return results


EmbeddedStore.commit = _recording_commit  # type: ignore[method-assign]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The conformance check validates what the rest of the suite wrote: run it last."""
    last = [i for i in items if i.get_closest_marker("conformance")]
    items[:] = [i for i in items if not i.get_closest_marker("conformance")] + last
