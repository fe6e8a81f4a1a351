"""What an operator sees of a running fhircare: health, readiness, Prometheus metrics, one
access line per request, one line per HL7 message and per discharge, MLLP and REST on one
store, and read-only commands while `serve` holds the data folder."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from fhircare.api.app import create_app
from fhircare.config import Settings
from fhircare.observability.logs import TextFormatter, safe_traceback
from fhircare.transitions.mllp import MllpDecoder, frame
from tests.conftest import ROOT, ServerProcess, free_port

A03 = (ROOT / "examples" / "adt-a03.hl7").read_bytes()
QUOTED_PATIENT = "Chalmers, Peter 1974-12-25"


def mllp_send(port: int, payload: bytes) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(frame(payload))
        decoder = MllpDecoder()
        while True:
            chunk = s.recv(65536)
            assert chunk, "connection closed before the ACK"
            got = decoder.feed(chunk)
            if got:
                return got[0].decode()


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                out[tuple(sorted(sample.labels.items()))] = sample.value
    return out


@pytest.fixture
def json_server(tmp_path: Path):  # noqa: ANN201 - a started ServerProcess
    mllp_port = free_port()
    srv = ServerProcess(
        tmp_path / "data",
        env={
            "FHIRCARE_LOG_FORMAT": "json",
            "FHIRCARE_MLLP_PORT": str(mllp_port),
            "FHIRCARE_CARE_MANAGER": "",
        },
    ).start()
    srv.mllp_port = mllp_port  # type: ignore[attr-defined]
    yield srv
    srv.stop()


def test_one_process_serves_rest_and_mllp_on_one_store_and_logs_each_event(
    json_server: ServerProcess,
) -> None:
    srv = json_server
    with httpx.Client(base_url=srv.root, timeout=30) as c:
        assert c.get("/health").json() == {"status": "ok"}
        ready = c.get("/ready")
        assert ready.status_code == 200
        assert ready.json()["checks"] == {"store": "ok", "mllp": "listening"}
        given = c.get("/fhir/metadata", headers={"X-Request-ID": "trace-me-42"})
        assert given.headers["x-request-id"] == "trace-me-42"
        generated = c.get("/fhir/Patient", params={"identifier": "MRN-SECRET-77"})
        assert len(generated.headers["x-request-id"]) == 32

        ack = mllp_send(srv.mllp_port, A03)  # type: ignore[attr-defined]
        assert "MSA|AA|EXAMPLE-A03-1" in ack
        # the REST side sees what MLLP wrote: one process, one store
        found = c.get("/fhir/Patient", params={"identifier": "MRN-1001"}).json()
        assert found["total"] == 1
        assert c.get("/fhir/Task").json()["total"] >= 3
        assert "MSA|AA" in mllp_send(srv.mllp_port, A03)  # a resend: same ACK, nothing new
        garbage = mllp_send(srv.mllp_port, b"MSH|^~\\&|X|Y|Z|W|2026||ORU^R01|CTL-9|P|2.5.1")
        assert "MSA|AR|CTL-9" in garbage

        # read-only commands while serve holds the folder: asked of the running server
        status = subprocess.run(
            [sys.executable, "-m", "fhircare", "sync", "status", "--data", str(srv.data)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["pending"] > 0

        text = c.get("/metrics")
        assert text.headers["content-type"].startswith("text/plain")
    metrics = text.text
    hl7 = samples(metrics, "fhircare_hl7_messages_total")
    assert hl7[(("ack", "AA"), ("transport", "mllp"), ("type", "ADT^A03"))] == 2
    assert hl7[(("ack", "AR"), ("transport", "mllp"), ("type", "ORU^R01"))] == 1
    assert samples(metrics, "fhircare_discharges_total")[(("outcome", "processed"),)] == 1
    requests = samples(metrics, "fhircare_http_requests_total")
    key = (("method", "GET"), ("route", "/fhir/{resource_type}"), ("status", "200"))
    assert requests[key] == 3
    assert any(
        s == (("le", "+Inf"), ("method", "GET"), ("route", "/health"))
        for s in samples(metrics, "fhircare_http_request_duration_seconds_bucket")
    )

    srv.stop()
    lines = [json.loads(line) for line in srv.log_text().splitlines() if line.startswith("{")]
    assert lines, "no JSON log lines"
    access = [r for r in lines if r["logger"] == "fhircare.access"]
    assert {"method", "route", "status", "ms", "request_id"} <= set(access[0])
    assert any(r["request_id"] == "trace-me-42" and r["route"] == "/fhir/metadata" for r in access)
    assert sum(1 for r in access if r["route"] == "/fhir/{resource_type}") == 3
    hl7_lines = [r for r in lines if r["logger"] == "fhircare.hl7"]
    assert [(r["control_id"], r["type"], r["ack"]) for r in hl7_lines] == [
        ("EXAMPLE-A03-1", "ADT^A03", "AA"),
        ("EXAMPLE-A03-1", "ADT^A03", "AA"),
        ("CTL-9", "ORU^R01", "AR"),
    ]
    discharges = [r for r in lines if r["logger"] == "fhircare.discharge" and "outcome" in r]
    assert [r["outcome"] for r in discharges] == ["processed"]
    log = srv.log_text()
    for secret in ("MRN-SECRET-77", "MRN-1001", "Sample", "Dana", "19540712"):
        assert secret not in log, f"patient data {secret!r} in the log"


def test_text_log_lines_are_not_wrapped(tmp_path: Path) -> None:
    srv = ServerProcess(
        tmp_path / "data", env={"FHIRCARE_LOG_FORMAT": "text", "COLUMNS": "40"}
    ).start()
    try:
        httpx.get(f"{srv.base}/metadata", timeout=30)
    finally:
        srv.stop()
    lines = srv.log_text().splitlines()
    start = next(line for line in lines if "serving http://" in line)
    assert "(store: embedded" in start and start.rstrip().endswith("server: uvicorn)")
    assert any(" fhircare.access " in line and "GET /fhir/metadata 200" in line for line in lines)


def test_ready_reports_an_unreachable_hapi(tmp_path: Path) -> None:
    settings = Settings(
        data=tmp_path / "d", hapi_url=f"http://127.0.0.1:{free_port()}/fhir", sweep_interval=0
    )
    with TestClient(create_app(settings)) as c:
        r = c.get("/ready")
        assert c.get("/health").status_code == 200
    assert r.status_code == 503
    assert r.json()["status"] == "not ready"
    assert r.json()["checks"]["hapi"].startswith("unreachable")


@pytest.mark.hapi
def test_ready_and_subscription_at_start_with_hapi(
    hapi_recommended_url: str, tmp_path: Path
) -> None:
    hapi_base_url = hapi_recommended_url  # a Subscription needs rest-hook (off in stock)
    endpoint = f"http://127.0.0.1:{free_port()}/events/hapi"
    settings = Settings(
        data=tmp_path / "d",
        hapi_url=hapi_base_url,
        subscribe_endpoint=endpoint,
        sweep_interval=0,
        seed_definitions=False,
    )
    with TestClient(create_app(settings)) as c:
        state = c.get("/ready").json()
        while state["checks"]["subscription"].startswith("pending"):  # until the task reports
            assert not state["checks"]["subscription"].startswith("pending ("), state
            state = c.get("/ready").json()
    assert state["status"] == "ready" and state["checks"]["hapi"] == "ok"
    assert state["checks"]["subscription"].startswith("active (Subscription/")
    sub_id = state["checks"]["subscription"].split("Subscription/")[1].rstrip(")")
    sub = httpx.get(f"{hapi_base_url}/Subscription/{sub_id}", timeout=30).json()
    assert sub["channel"]["endpoint"] == endpoint and sub["criteria"] == "Encounter?status=finished"


def test_unexpected_errors_are_logged_with_a_traceback_and_never_sent(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError(QUOTED_PATIENT)  # a message quoting patient data

    monkeypatch.setattr(client.app.state.container.store, "read", broken)
    with caplog.at_level(logging.ERROR, logger="fhircare.api"):
        r = client.get("/fhir/Patient/x1")
    assert r.status_code == 500
    assert r.json()["issue"][0]["diagnostics"] == "Internal error (RuntimeError)"
    assert "Chalmers" not in r.text and "Traceback" not in r.text
    (record,) = [rec for rec in caplog.records if rec.name == "fhircare.api"]
    assert "/fhir/{resource_type}/{resource_id}" in record.getMessage()
    formatted = TextFormatter("%(message)s").format(record)
    assert "Traceback (most recent call last)" in formatted and "in broken" in formatted
    assert "RuntimeError (message withheld)" in formatted and "Chalmers" not in formatted


def test_debug_tracebacks_keep_messages() -> None:
    inner, outer = "in" + "ner-value", "out" + "er-value"  # not on the raising lines
    try:
        try:
            raise KeyError(inner)
        except KeyError as exc:
            raise ValueError(outer) from exc
    except ValueError as exc:
        full = safe_traceback(exc, with_messages=True)
        safe = safe_traceback(exc, with_messages=False)
    assert "inner-value" in full and "outer-value" in full
    assert "KeyError (message withheld)" in safe and "ValueError (message withheld)" in safe
    assert "inner-value" not in safe and "outer-value" not in safe


def test_health_ready_and_metrics_need_no_token_under_smart(tmp_path: Path) -> None:
    jwks = tmp_path / "jwks.json"
    jwks.write_text('{"keys": []}')
    settings = Settings(
        data=tmp_path / "d",
        auth="smart",
        auth_jwks=str(jwks),
        auth_issuer="https://issuer.example.org",
        auth_audience="https://fhircare.example.org/fhir",
        sweep_interval=0,
    )
    with TestClient(create_app(settings)) as c:
        assert c.get("/health").status_code == 200
        assert c.get("/ready").status_code == 200
        assert c.get("/metrics").status_code == 200
        assert c.get("/sync/status").status_code == 401  # names resources: needs a token
        assert c.get("/fhir/Patient").status_code == 401


def test_sync_status_without_a_running_server_reports_the_lock(tmp_path: Path) -> None:
    from fhircare.store.embedded import EmbeddedStore

    data = tmp_path / "held"
    holder = EmbeddedStore(data)  # held by this process, which announced no server
    try:
        out = subprocess.run(
            [sys.executable, "-m", "fhircare", "sync", "status", "--data", str(data)],
            capture_output=True,
            text=True,
            timeout=60,
            env={k: v for k, v in os.environ.items() if not k.startswith("FHIRCARE_")},
        )
    finally:
        holder.close()
    assert out.returncode == 2
    assert "in use by another fhircare process" in out.stderr
