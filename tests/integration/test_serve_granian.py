"""`fhircare serve --server granian` as a real process: the lifespan starts the MLLP listener
on granian's event loop (REST and MLLP on one store), errors are OperationOutcomes, a head
beyond FHIRCARE_MAX_HEADER_BYTES is 431 with one, and SIGTERM stops it gracefully."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ServerProcess, free_port
from tests.integration.test_operators import A03, mllp_send


@pytest.fixture
def granian_server(tmp_path: Path) -> Iterator[ServerProcess]:
    mllp_port = free_port()
    env = {
        "FHIRCARE_SERVER": "granian",
        "FHIRCARE_MLLP_PORT": str(mllp_port),
        "FHIRCARE_CARE_MANAGER": "",
        "FHIRCARE_FSYNC": "false",
    }
    srv = ServerProcess(tmp_path / "data", env=env).start()
    srv.mllp_port = mllp_port  # type: ignore[attr-defined]
    yield srv
    srv.stop()


def test_granian_serves_rest_and_mllp_on_one_store(granian_server: ServerProcess) -> None:
    with httpx.Client(base_url=granian_server.base, timeout=30) as c:
        meta = c.get("/metadata")
        assert meta.status_code == 200
        assert meta.headers["server"] == "granian"
        ready = c.get(f"{granian_server.root}/ready")
        assert ready.json()["checks"] == {"store": "ok", "mllp": "listening"}
        ack = mllp_send(granian_server.mllp_port, A03)  # type: ignore[attr-defined]
        assert "MSA|AA" in ack
        assert c.get("/Patient").json()["total"] == 1  # what MLLP wrote, seen over REST
        missing = c.get("/Patient/no-such-one")
        assert missing.status_code == 404
        assert missing.json()["resourceType"] == "OperationOutcome"


def test_granian_refuses_a_head_beyond_the_limit(granian_server: ServerProcess) -> None:
    with httpx.Client(base_url=granian_server.base, timeout=15) as c:
        r = c.get("/Patient", headers={"Authorization": "Bearer " + "a" * 200_000})
        assert r.status_code == 431
        assert r.headers["connection"] == "close"
        outcome = r.json()
        assert outcome["issue"][0]["code"] == "too-long"
        assert "FHIRCARE_MAX_HEADER_BYTES" in outcome["issue"][0]["diagnostics"]
        assert c.get("/Patient", headers={"X-Pad": "p" * 20_000}).status_code == 200


def test_sigterm_stops_granian_gracefully(granian_server: ServerProcess) -> None:
    proc = granian_server.proc
    assert proc is not None
    made = httpx.post(
        f"{granian_server.base}/Patient",
        json={"resourceType": "Patient", "name": [{"family": "Kept"}]},
        headers={"Content-Type": "application/fhir+json"},
        timeout=15,
    )
    assert made.status_code == 201
    assert json.loads((granian_server.data / "serve.json").read_text())["pid"] == proc.pid
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    assert not (granian_server.data / "serve.json").exists()  # the announcement withdrawn
    log = granian_server.log_text()
    assert "Shutting down granian" in log
    # the store's lock is released: another server opens the same folder, with the Patient
    again = ServerProcess(granian_server.data, env={"FHIRCARE_SERVER": "granian"}).start()
    try:
        with httpx.Client(base_url=again.base, timeout=15) as c:
            assert c.get(f"/Patient/{made.json()['id']}").json()["name"][0]["family"] == "Kept"
    finally:
        again.stop()
