"""`pull_export` when servers misbehave (respx fault injection): busy kick-offs, failed
jobs, truncated files, missing headers; every failure one typed line, and the job is
deleted on the server whatever happened."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import respx

from fhircare.population.bulk_pull import BulkExportError, pull_export

BASE = "http://bulk.test/fhir"
STATUS = f"{BASE}/bulk/j1"
OUTCOME = {"resourceType": "OperationOutcome", "issue": [{"diagnostics": "disk full"}]}


def _manifest(count: int) -> dict:
    return {
        "transactionTime": "2026-12-02T00:00:00Z",
        "request": f"{BASE}/$export",
        "requiresAccessToken": False,
        "output": [{"type": "Patient", "url": f"{STATUS}/Patient.ndjson", "count": count}],
        "error": [],
    }


@respx.mock
def test_busy_kick_off_is_retried_and_the_job_deleted(tmp_path: Path) -> None:
    kick = respx.get(f"{BASE}/$export").mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": "0"}, json=OUTCOME),
            httpx.Response(202, headers={"Content-Location": STATUS}),
        ]
    )
    respx.get(STATUS).mock(
        side_effect=[
            httpx.Response(202, headers={"X-Progress": "50%", "Retry-After": "0"}),
            httpx.Response(200, json=_manifest(2)),
        ]
    )
    respx.get(f"{STATUS}/Patient.ndjson").mock(
        return_value=httpx.Response(200, content=b'{"resourceType":"Patient"}\n' * 2)
    )
    deleted = respx.delete(STATUS).mock(return_value=httpx.Response(202))
    seen: list[tuple[str, float | None]] = []
    [path] = pull_export(BASE, tmp_path, on_progress=lambda m, f: seen.append((m, f)))
    assert kick.call_count == 2
    assert kick.calls[0].request.headers["prefer"] == "respond-async"
    assert path.read_bytes().count(b"\n") == 2
    assert ("50%", 0.5) in seen
    assert deleted.called


@respx.mock
def test_truncated_file_fails_on_its_count(tmp_path: Path) -> None:
    respx.get(f"{BASE}/Patient/$export").mock(
        return_value=httpx.Response(202, headers={"Content-Location": STATUS})
    )
    respx.get(STATUS).mock(return_value=httpx.Response(200, json=_manifest(3)))
    respx.get(f"{STATUS}/Patient.ndjson").mock(
        return_value=httpx.Response(200, content=b'{"resourceType":"Patient"}\n{"res')
    )
    deleted = respx.delete(STATUS).mock(return_value=httpx.Response(202))
    with pytest.raises(BulkExportError, match="manifest says 3 resources, the file holds 2"):
        pull_export(BASE, tmp_path, level="patient")
    assert deleted.called


@respx.mock
def test_failed_job_and_bad_answers(tmp_path: Path) -> None:
    respx.get(f"{BASE}/$export").mock(
        return_value=httpx.Response(202, headers={"Content-Location": STATUS})
    )
    status = respx.get(STATUS).mock(return_value=httpx.Response(500, json=OUTCOME))
    deleted = respx.delete(STATUS).mock(side_effect=httpx.ConnectError("gone"))
    with pytest.raises(BulkExportError, match=r"the export failed \(500\): disk full"):
        pull_export(BASE, tmp_path)
    assert deleted.called  # tried, and its failure did not hide the export's own error
    status.mock(return_value=httpx.Response(200, text="not json"))
    with pytest.raises(BulkExportError, match="manifest is not JSON"):
        pull_export(BASE, tmp_path)
    respx.get(f"{BASE}/$export").mock(return_value=httpx.Response(202))
    with pytest.raises(BulkExportError, match="without a Content-Location"):
        pull_export(BASE, tmp_path)
    respx.get(f"{BASE}/$export").mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(BulkExportError, match="ConnectError"):
        pull_export(BASE, tmp_path)
    with pytest.raises(BulkExportError, match="level must be"):
        pull_export(BASE, tmp_path, level="everything")


@respx.mock
def test_export_that_never_finishes_times_out_and_is_cancelled(tmp_path: Path) -> None:
    respx.get(f"{BASE}/$export").mock(
        return_value=httpx.Response(202, headers={"Content-Location": STATUS})
    )
    respx.get(STATUS).mock(return_value=httpx.Response(202, headers={"Retry-After": "0"}))
    deleted = respx.delete(STATUS).mock(return_value=httpx.Response(202))
    with pytest.raises(BulkExportError, match="did not finish in time"):
        pull_export(BASE, tmp_path, timeout=0)
    assert deleted.called
