"""fhircare as a Bulk Data server (FHIR Bulk Data Access IG v2), through the ASGI app:
kick-off, status, manifest, ndjson files, DELETE, `_type`, `_since`, `_outputFormat`, the
error answers, 429 when busy, and finished jobs surviving a restart."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fhircare.api.app import create_app
from fhircare.bootstrap import build_container
from fhircare.config import Settings
from fhircare.population.bulk_jobs import MANIFEST, RUNNER_GONE, ExportJobs
from fhircare.store.embedded import EmbeddedStore
from tests.helpers.panel import example_resources, group, panel_resources, transaction

BASE = "http://127.0.0.1:8000/fhir"
ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}
INSTANT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


def _settings(tmp_path: Path, **kw: Any) -> Settings:
    values: dict[str, Any] = {
        "data": tmp_path / "d",
        "fsync": False,
        "audit": False,
        "sweep_interval": 0,
        "bulk_file_lines": 3,
        "bulk_retry_after": 1,
    }
    return Settings(**(values | kw))


def _load(c: TestClient) -> None:
    resources = panel_resources(5) + example_resources()
    resources.append(group("g1", ["pp0", "pp1"]))
    resources.append({"resourceType": "Practitioner", "id": "dr1", "name": [{"family": "Who"}]})
    r = c.post("/fhir", json=transaction(resources))
    assert r.status_code == 200, r.text


@pytest.fixture
def bulk(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(_settings(tmp_path))) as c:
        _load(c)
        yield c


def _path(url: str) -> str:
    assert url.startswith(BASE), url
    return url[len(BASE) - len("/fhir") :]


def kick_off(c: TestClient, path: str, params: Any = None, **headers: str) -> str:
    r = c.get(path, params=params, headers={**ASYNC, **headers})
    assert r.status_code == 202, r.text
    assert r.json()["resourceType"] == "OperationOutcome"
    return r.headers["content-location"]


def finish(c: TestClient, status_url: str, headers: dict[str, str] | None = None) -> Any:
    job_id = status_url.rsplit("/", 1)[-1]
    assert c.app.state.exports.wait(job_id, 60)  # type: ignore[attr-defined]
    return c.get(_path(status_url), headers=headers or {})


def download(c: TestClient, manifest: dict[str, Any], **headers: str) -> dict[str, list[dict]]:
    """type -> resources, checking each file's media type, count and line types."""
    got: dict[str, list[dict]] = {}
    for item in manifest["output"]:
        r = c.get(_path(item["url"]), headers={"Accept": "application/fhir+ndjson", **headers})
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("application/fhir+ndjson")
        lines = [json.loads(line) for line in r.text.splitlines()]
        assert len(lines) == item["count"]
        assert {x["resourceType"] for x in lines} == {item["type"]}
        got.setdefault(item["type"], []).extend(lines)
    return got


def held(c: TestClient, rtype: str) -> set[str]:
    return {r["id"] for r in c.app.state.store.iter_resources(rtype)}  # type: ignore[attr-defined]


def test_system_export_holds_every_resource_in_split_files(bulk: TestClient) -> None:
    status_url = kick_off(bulk, "/fhir/$export")
    assert status_url.startswith(f"{BASE}/bulk/")
    r = finish(bulk, status_url)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    manifest = r.json()
    assert INSTANT.match(manifest["transactionTime"])
    assert manifest["request"].endswith("/fhir/$export")
    assert manifest["requiresAccessToken"] is False
    assert manifest["error"] == []
    got = download(bulk, manifest)
    store: EmbeddedStore = bulk.app.state.store  # type: ignore[attr-defined]
    expected = {t for t in store.resource_types() if held(bulk, t)}
    assert set(got) == expected
    for rtype, resources in got.items():
        assert {x["id"] for x in resources} == held(bulk, rtype), rtype
    # 6 patients at 3 lines a file: two files, named apart
    patient_files = [o["url"] for o in manifest["output"] if o["type"] == "Patient"]
    assert len(patient_files) == 2 and len(set(patient_files)) == 2


def test_type_and_output_format(bulk: TestClient) -> None:
    for fmt in ("application/fhir+ndjson", "application/ndjson", "ndjson"):
        url = kick_off(bulk, "/fhir/$export", {"_type": "Patient,Condition", "_outputFormat": fmt})
        got = download(bulk, finish(bulk, url).json())
        assert set(got) == {"Patient", "Condition"}
    # an unencoded '+' arrives as a space and is still understood
    r = bulk.get("/fhir/$export?_outputFormat=application/fhir+ndjson&_type=Patient", headers=ASYNC)
    assert r.status_code == 202
    for params, needle in (
        ({"_outputFormat": "text/csv"}, "_outputFormat"),
        ({"_type": "Patient,NoSuchType"}, "NoSuchType"),
        ({"_type": ","}, "_type"),
    ):
        r = bulk.get("/fhir/$export", params=params, headers=ASYNC)
        assert r.status_code == 400, params
        assert needle in r.json()["issue"][0]["diagnostics"]


def test_since_keeps_what_changed_at_or_after_it(bulk: TestClient) -> None:
    r = bulk.put(
        "/fhir/Observation/pp1-o",
        json={**panel_resources(2)[6], "status": "amended"},
    )
    assert r.status_code == 200
    since = r.json()["meta"]["lastUpdated"]
    url = kick_off(bulk, "/fhir/$export", {"_since": since})
    got = download(bulk, finish(bulk, url).json())
    assert {t: [x["id"] for x in v] for t, v in got.items()} == {"Observation": ["pp1-o"]}
    for bad in ("2026-13-01T00:00:00Z", "2026-01-01", "yesterday"):
        r = bulk.get("/fhir/$export", params={"_since": bad}, headers=ASYNC)
        assert r.status_code == 400 and "_since" in r.text
    r = bulk.get("/fhir/$export?_since=2026-01-01T00:00:00+01:00", headers=ASYNC)
    assert r.status_code == 400 and "%2B" in r.json()["issue"][0]["diagnostics"]


def test_kick_off_refusals(bulk: TestClient) -> None:
    r = bulk.get("/fhir/$export", headers={"Accept": "application/fhir+json"})
    assert r.status_code == 400 and "respond-async" in r.json()["issue"][0]["diagnostics"]
    r = bulk.get("/fhir/$export", params={"_typeFilter": "Patient?gender=male"}, headers=ASYNC)
    assert r.status_code == 400 and "_typeFilter" in r.json()["issue"][0]["diagnostics"]
    r = bulk.get("/fhir/Patient/$export", params={"_type": "Practitioner"}, headers=ASYNC)
    assert r.status_code == 400 and "compartment" in r.json()["issue"][0]["diagnostics"]
    r = bulk.get("/fhir/Group/nope/$export", headers=ASYNC)
    assert r.status_code == 404
    r = bulk.get("/fhir/$export", headers={**ASYNC, "Accept": "application/fhir+xml"})
    assert r.status_code == 406
    r = bulk.post("/fhir/$export", json={"resourceType": "Patient"}, headers=ASYNC)
    assert r.status_code == 400


def test_lenient_handling_ignores_unsupported_parameters(bulk: TestClient) -> None:
    url = kick_off(
        bulk,
        "/fhir/Patient/$export",
        {"_typeFilter": "Patient?gender=male", "_type": "Patient,Practitioner"},
        Prefer="respond-async, handling=lenient",
    )
    manifest = finish(bulk, url).json()
    assert manifest["extension"] == {"ignoredParameters": ["_typeFilter"]}
    assert set(download(bulk, manifest)) == {"Patient"}


def test_patient_level_is_the_patient_compartment(bulk: TestClient) -> None:
    got = download(bulk, finish(bulk, kick_off(bulk, "/fhir/Patient/$export")).json())
    assert "Practitioner" not in got  # not in the compartment; a Group is (Group.member)
    assert [x["id"] for x in got["Group"]] == ["g1"]
    assert {x["id"] for x in got["Patient"]} == held(bulk, "Patient")
    assert {x["id"] for x in got["MedicationRequest"]} == held(bulk, "MedicationRequest")
    assert {x["id"] for x in got["Observation"]} == held(bulk, "Observation")  # + LACE


def test_group_level_is_the_members_compartments(bulk: TestClient) -> None:
    got = download(bulk, finish(bulk, kick_off(bulk, "/fhir/Group/g1/$export")).json())
    assert {t: sorted(x["id"] for x in v) for t, v in got.items()} == {
        "Patient": ["pp0", "pp1"],
        "Condition": ["pp0-c", "pp1-c"],
        "Observation": ["pp0-o", "pp1-o"],
        "Encounter": ["pp0-e", "pp1-e"],
        "Group": ["g1"],  # in its members' compartments (Group.member)
    }


def test_post_kick_off_with_parameters(bulk: TestClient) -> None:
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "_type", "valueString": "Encounter"},
            {"name": "_outputFormat", "valueString": "application/fhir+ndjson"},
            {"name": "_since", "valueInstant": "2000-01-01T00:00:00Z"},
        ],
    }
    r = bulk.post("/fhir/Group/g1/$export", json=body, headers=ASYNC)
    assert r.status_code == 202, r.text
    got = download(bulk, finish(bulk, r.headers["content-location"]).json())
    assert {t: len(v) for t, v in got.items()} == {"Encounter": 2}


def test_patient_parameter_narrows_patient_and_group_exports(bulk: TestClient) -> None:
    # as the SMART bulk-data-client sends it: POST, valueReference, with handling=lenient
    # (which it sends by default): the export holds the named patients' data only
    lenient = {**ASYNC, "Prefer": "respond-async, handling=lenient"}
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "_type", "valueString": "Patient,Condition"},
            {"name": "patient", "valueReference": {"reference": "Patient/pp2"}},
            {"name": "patient", "valueReference": {"reference": f"{BASE}/Patient/pp3"}},
        ],
    }
    r = bulk.post("/fhir/Patient/$export", json=body, headers=lenient)
    assert r.status_code == 202, r.text
    manifest = finish(bulk, r.headers["content-location"]).json()
    assert "extension" not in manifest  # nothing ignored
    job_dir = bulk.app.state.exports.root / r.headers["content-location"].rsplit("/", 1)[-1]  # type: ignore[attr-defined]
    saved = ExportJobs._parse(job_dir, json.loads((job_dir / MANIFEST).read_text()))
    assert saved.request.patients == ("pp2", "pp3")  # what another worker reads
    got = download(bulk, manifest)
    assert {t: sorted(x["id"] for x in v) for t, v in got.items()} == {
        "Patient": ["pp2", "pp3"],
        "Condition": ["pp2-c", "pp3-c"],
    }
    # at Group level: the named patients that are members (g1 holds pp0 and pp1)
    body["parameter"][1:] = [{"name": "patient", "valueReference": {"reference": "Patient/pp1"}}]
    body["parameter"].append({"name": "patient", "valueReference": {"reference": "Patient/pp2"}})
    r = bulk.post("/fhir/Group/g1/$export", json=body, headers=ASYNC)
    assert r.status_code == 202, r.text
    got = download(bulk, finish(bulk, r.headers["content-location"]).json())
    assert {t: sorted(x["id"] for x in v) for t, v in got.items()} == {
        "Patient": ["pp1"],
        "Condition": ["pp1-c"],
    }
    # a query string takes comma-separated references
    url = kick_off(
        bulk, "/fhir/Patient/$export", {"_type": "Patient", "patient": "Patient/pp0,Patient/pp4"}
    )
    got = download(bulk, finish(bulk, url).json())
    assert sorted(x["id"] for x in got["Patient"]) == ["pp0", "pp4"]
    # refused: not a reference to one of this server's Patients; at system level
    for ref in ("Practitioner/dr1", "https://elsewhere.example/fhir/Patient/pp0", ""):
        bad = {
            "resourceType": "Parameters",
            "parameter": [{"name": "patient", "valueReference": {"reference": ref}}],
        }
        r = bulk.post("/fhir/Patient/$export", json=bad, headers=ASYNC)
        assert r.status_code == 400 and "patient" in r.json()["issue"][0]["diagnostics"], ref
    r = bulk.get("/fhir/$export", params={"patient": "Patient/pp0"}, headers=ASYNC)
    assert r.status_code == 400 and "system-level" in r.json()["issue"][0]["diagnostics"]
    url = kick_off(
        bulk,
        "/fhir/$export",
        {"patient": "Patient/pp0", "_type": "Patient"},
        Prefer="respond-async, handling=lenient",
    )
    manifest = finish(bulk, url).json()
    assert manifest["extension"] == {"ignoredParameters": ["patient"]}
    assert len(download(bulk, manifest)["Patient"]) == len(held(bulk, "Patient"))


def test_capability_statement_declares_the_export_operations(bulk: TestClient) -> None:
    cap = bulk.get("/fhir/metadata").json()
    ig = "http://hl7.org/fhir/uv/bulkdata"
    assert f"{ig}/CapabilityStatement/bulk-data" in cap["instantiates"]
    rest = cap["rest"][0]
    assert {"name": "export", "definition": f"{ig}/OperationDefinition/export"} in rest["operation"]
    by_type = {r["type"]: r for r in rest["resource"]}
    for rtype, name in (("Patient", "patient-export"), ("Group", "group-export")):
        ops = by_type[rtype]["operation"]
        assert {"name": "export", "definition": f"{ig}/OperationDefinition/{name}"} in ops


class GatedStore(EmbeddedStore):
    """An embedded store whose reads from export threads wait at `gate` (so a test sees
    a job running); the requests' own reads go through."""

    gate: threading.Event

    def _wait(self) -> None:
        if threading.current_thread().name.startswith("bulk"):
            assert self.gate.wait(60)

    def read(self, resource_type: str, id: str) -> dict[str, Any]:
        self._wait()
        return super().read(resource_type, id)

    def iter_resources(self, resource_type: str):  # noqa: ANN201 - as EmbeddedStore
        self._wait()
        return super().iter_resources(resource_type)


@pytest.fixture
def gated(tmp_path: Path) -> Iterator[tuple[TestClient, threading.Event]]:
    settings = _settings(tmp_path, bulk_max_jobs=1)
    store = GatedStore(settings.data, fsync=False)
    store.gate = threading.Event()
    container = build_container(settings, store=store)
    try:
        with TestClient(create_app(settings, container=container)) as c:
            _load(c)
            yield c, store.gate
            store.gate.set()
    finally:
        container.close()


def test_running_job_reports_progress_then_busy_then_cancel(
    gated: tuple[TestClient, threading.Event],
) -> None:
    c, gate = gated
    url = kick_off(c, "/fhir/$export", {"_type": "Patient,Observation"})
    r = c.get(_path(url))
    assert r.status_code == 202
    assert r.headers["retry-after"] == "1"
    assert r.headers["x-progress"].startswith("0% (0/2 types")
    busy = c.get("/fhir/$export", headers=ASYNC)  # FHIRCARE_BULK_MAX_JOBS=1
    assert busy.status_code == 429 and busy.headers["retry-after"] == "1"
    assert busy.json()["issue"][0]["code"] == "throttled"
    assert c.delete(_path(url)).status_code == 202
    gate.set()
    assert c.app.state.exports.wait(url.rsplit("/", 1)[-1], 60)  # type: ignore[attr-defined]
    assert c.get(_path(url)).status_code == 404
    assert c.delete(_path(url)).status_code == 404
    assert not (c.app.state.settings.data / "bulk" / url.rsplit("/", 1)[-1]).exists()  # type: ignore[attr-defined]


def test_failed_job_answers_the_error_response(
    gated: tuple[TestClient, threading.Event],
) -> None:
    c, gate = gated
    url = kick_off(c, "/fhir/Group/g1/$export")
    assert c.delete("/fhir/Group/g1").status_code in (200, 204)  # gone before the job reads it
    gate.set()
    r = finish(c, url)
    assert r.status_code == 500
    issue = r.json()["issue"][0]
    assert r.json()["resourceType"] == "OperationOutcome" and issue["severity"] == "fatal"
    assert "Group" in issue["diagnostics"]


def test_a_type_that_fails_goes_to_the_error_file(tmp_path: Path) -> None:
    class Failing(EmbeddedStore):
        def iter_resources(self, resource_type: str):  # noqa: ANN201 - as EmbeddedStore
            if resource_type == "Condition":
                raise OSError("disk on fire")
            return super().iter_resources(resource_type)

    settings = _settings(tmp_path)
    container = build_container(settings, store=Failing(settings.data, fsync=False))
    try:
        with TestClient(create_app(settings, container=container)) as c:
            _load(c)
            url = kick_off(c, "/fhir/$export", {"_type": "Patient,Condition"})
            manifest = finish(c, url).json()
            assert set(download(c, manifest)) == {"Patient"}
            [error] = manifest["error"]
            assert error["type"] == "OperationOutcome" and error["count"] == 1
            text = c.get(_path(error["url"])).text
            outcome = json.loads(text.splitlines()[0])
            assert outcome["resourceType"] == "OperationOutcome"
            assert "Condition" in outcome["issue"][0]["diagnostics"]
    finally:
        container.close()


def test_finished_jobs_survive_a_restart(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    with TestClient(create_app(settings)) as c:
        _load(c)
        url = kick_off(c, "/fhir/$export", {"_type": "Patient"})
        before = finish(c, url).json()
    leftover = settings.data / "bulk" / ("0" * 32)  # a job that was running at the stop
    leftover.mkdir()
    (leftover / "Patient.ndjson").write_text("{}\n")
    with TestClient(create_app(settings)) as c:
        after = c.get(_path(url))
        assert after.status_code == 200 and after.json() == before
        assert download(c, after.json())["Patient"]
        assert c.get(f"/fhir/bulk/{'0' * 32}").status_code == 404
    assert not leftover.exists()


def test_a_job_whose_runner_has_gone_answers_the_error_response(bulk: TestClient) -> None:
    """A job another worker ran, left `running` by a worker that died: failed, not 202 for
    ever."""
    url = kick_off(bulk, "/fhir/$export", {"_type": "Patient"})
    assert finish(bulk, url).status_code == 200
    root = bulk.app.state.settings.data / "bulk"  # type: ignore[attr-defined]
    record = json.loads((root / url.rsplit("/", 1)[-1] / MANIFEST).read_text())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # its pid: a process that has gone
    record |= {"state": "running", "pid": child.pid, "heartbeat": time.time(), "outputs": []}
    orphan = root / ("2" * 32)
    orphan.mkdir()
    (orphan / MANIFEST).write_text(json.dumps(record))
    r = bulk.get(f"/fhir/bulk/{orphan.name}")
    assert r.status_code == 500
    assert r.json()["resourceType"] == "OperationOutcome"
    assert r.json()["issue"][0]["diagnostics"] == RUNNER_GONE
    assert bulk.delete(f"/fhir/bulk/{orphan.name}").status_code == 202
    assert not orphan.exists()
