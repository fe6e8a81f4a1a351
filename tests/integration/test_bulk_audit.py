"""The audit trail of a Bulk Data export, through the ASGI app: an AuditEvent (DICOM 110106
Export) at the kick-off, one per patient whose data the finished export holds, and one per
file download, each naming the client and the job; with FHIRCARE_AUTH=none and with a
SMART backend-services token. Every event is a valid R4 AuditEvent."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from fhir.resources.R4B.auditevent import AuditEvent

from fhircare.api.app import create_app
from fhircare.bootstrap import build_container
from fhircare.config import Settings
from fhircare.conformance import validate
from fhircare.store.embedded import EmbeddedStore
from tests.helpers.panel import example_resources, group, panel_resources, transaction
from tests.integration import test_bulk_export, test_bulk_smart, test_smart_api
from tests.integration.test_bulk_export import ASYNC, GatedStore, kick_off
from tests.integration.test_smart_api import auth, token

# the SMART app and signing keys of the SMART tests
keys = test_smart_api.keys
smart = test_smart_api.smart

DCM = "http://dicom.nema.org/resources/ontology/DCM"
EXPORT_TYPE = f"{DCM}|110106"
URI = "urn:ietf:rfc:3986"


def _settings(tmp_path: Path, **kw: Any) -> Settings:
    values: dict[str, Any] = {
        "data": tmp_path / "d",
        "fsync": False,
        "audit": True,
        "sweep_interval": 0,
        "bulk_file_lines": 1,
    }
    return Settings(**(values | kw))


def _load(c: TestClient, headers: dict[str, str] | None = None) -> None:
    resources = panel_resources(5) + example_resources()
    resources.append(group("g1", ["pp0", "pp1"]))
    resources.append({"resourceType": "Practitioner", "id": "dr1", "name": [{"family": "Who"}]})
    r = c.post("/fhir", json=transaction(resources), headers=headers or {})
    assert r.status_code == 200, r.text


@pytest.fixture
def audited(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(_settings(tmp_path))) as c:
        _load(c)
        yield c


def export_events(c: TestClient, headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The export AuditEvents, found through the FHIR API after the recorder's flush."""
    c.app.state.audit.flush()  # type: ignore[attr-defined]
    r = c.get(
        "/fhir/AuditEvent", params={"type": EXPORT_TYPE, "_count": "1000"}, headers=headers or {}
    )
    assert r.status_code == 200, r.text
    bundle = r.json()
    assert "next" not in {link["relation"] for link in bundle.get("link", [])}
    events = [e["resource"] for e in bundle.get("entry", [])]
    for event in events:
        AuditEvent.model_validate(event)
    return events


def _entities(event: dict[str, Any], role: str) -> list[dict[str, Any]]:
    return [e for e in event["entity"] if e.get("role", {}).get("code") == role]


def _job_url(event: dict[str, Any]) -> str:
    [job] = _entities(event, "20")
    assert job["type"]["code"] == "2" and job["what"]["identifier"]["system"] == URI
    return job["what"]["identifier"]["value"]


def _stage(events: list[dict[str, Any]], stage: str, job_url: str) -> list[dict[str, Any]]:
    """The events of one stage of one job: kick-off (E), complete (R, a patient or no
    file), download (R with a file)."""

    def kind(e: dict[str, Any]) -> str:
        if e["action"] == "E":
            return "kick-off"
        return "download" if _entities(e, "3") else "complete"

    return [e for e in events if _job_url(e) == job_url and kind(e) == stage]


def _query(event: dict[str, Any]) -> str:
    [query] = _entities(event, "24")
    return base64.b64decode(query["query"]).decode()


def _patients(event: dict[str, Any]) -> list[str]:
    return [e["what"]["reference"] for e in _entities(event, "1")]


def _held_patients(files: dict[str, list[dict[str, Any]]]) -> set[str]:
    """The patients whose data the downloaded files hold (the Patient, or the subject)."""
    out = set()
    for resources in files.values():
        for r in resources:
            if r["resourceType"] == "Patient":
                out.add(f"Patient/{r['id']}")
            ref = (r.get("subject") or r.get("patient") or {}).get("reference", "")
            if ref.startswith("Patient/"):
                out.add(ref)
    return out


def _download_all(
    c: TestClient, manifest: dict[str, Any], headers: dict[str, str], base: str
) -> dict[str, list[dict[str, Any]]]:
    got: dict[str, list[dict[str, Any]]] = {}
    for item in manifest["output"]:
        r = c.get("/fhir" + item["url"][len(base) :], headers=headers)
        assert r.status_code == 200, r.text
        got.setdefault(item["type"], []).extend(json.loads(x) for x in r.text.splitlines())
    return got


def test_group_export_is_audited_at_kick_off_completion_and_download(audited: TestClient) -> None:
    c = audited
    url = kick_off(c, "/fhir/Group/g1/$export", {"_type": "Patient,Observation,Condition"})
    [start] = _stage(export_events(c), "kick-off", url)
    assert start["type"] == {"system": DCM, "code": "110106", "display": "Export"}
    assert start["subtype"][0]["code"] == "operation" and start["outcome"] == "0"
    assert start["agent"] == [{"who": {"display": "anonymous"}, "requestor": True}]
    assert _query(start).endswith("/fhir/Group/g1/$export?_type=Patient%2CObservation%2CCondition")
    assert {"reference": "Group/g1"} in [e.get("what") for e in start["entity"]]

    manifest = test_bulk_export.finish(c, url).json()
    files = _download_all(c, manifest, {}, test_bulk_export.BASE)
    events = export_events(c)
    done = _stage(events, "complete", url)
    assert sorted(p for e in done for p in _patients(e)) == ["Patient/pp0", "Patient/pp1"]
    assert _held_patients(files) == {"Patient/pp0", "Patient/pp1"}
    for event in done:
        assert event["action"] == "R" and event["outcome"] == "0" and "subtype" not in event
        [patient] = _entities(event, "1")
        assert patient["lifecycle"]["code"] == "10"  # dicom-audit-lifecycle Export
        assert _query(event) == _query(start)
    # the patient-centred view finds the export, as it finds searches
    by_patient = c.get("/fhir/AuditEvent", params={"patient": "Patient/pp0", "type": EXPORT_TYPE})
    assert [e["resource"]["action"] for e in by_patient.json()["entry"]] == ["R"]

    downloads = _stage(events, "download", url)
    file_urls = sorted(_entities(e, "3")[0]["what"]["identifier"]["value"] for e in downloads)
    assert file_urls == sorted(o["url"] for o in manifest["output"])
    assert len(manifest["output"]) == 6  # split files: one event per file downloaded


def test_system_export_audits_every_patient_it_holds(audited: TestClient) -> None:
    c = audited
    url = kick_off(c, "/fhir/$export")
    manifest = test_bulk_export.finish(c, url).json()
    files = _download_all(c, manifest, {}, test_bulk_export.BASE)
    done = _stage(export_events(c), "complete", url)
    audited_patients = [p for e in done for p in _patients(e)]
    assert len(audited_patients) == len(set(audited_patients)) == len(done)  # one each
    assert set(audited_patients) == _held_patients(files)
    assert len(audited_patients) == 6  # five panel patients and the discharge's patient
    [start] = _stage(export_events(c), "kick-off", url)
    refs = [e["what"].get("reference", "") for e in start["entity"] if "what" in e]
    assert not [ref for ref in refs if ref.startswith("Group/")]


@pytest.mark.parametrize("types", ["Practitioner", "AuditEvent"])
def test_an_export_of_no_patient_data_leaves_one_completion_event(
    audited: TestClient, types: str
) -> None:
    """A Practitioner is nobody's patient data; an AuditEvent counts for no patient either
    (reading AuditEvents is not audited, by searches or exports)."""
    c = audited
    export_events(c)  # the load's AuditEvents are committed, so the export holds some
    url = kick_off(c, "/fhir/$export", {"_type": types})
    manifest = test_bulk_export.finish(c, url).json()
    assert sum(o["count"] for o in manifest["output"]) > 0
    [done] = _stage(export_events(c), "complete", url)
    assert _patients(done) == [] and done["outcome"] == "0"


def test_a_failed_export_is_audited_as_a_serious_failure(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    store = GatedStore(settings.data, fsync=False)
    store.gate = threading.Event()
    container = build_container(settings, store=store)
    try:
        with TestClient(create_app(settings, container=container)) as c:
            _load(c)
            url = kick_off(c, "/fhir/Group/g1/$export")
            assert c.delete("/fhir/Group/g1").status_code in (200, 204)
            store.gate.set()
            assert test_bulk_export.finish(c, url).status_code == 500
            [done] = _stage(export_events(c), "complete", url)
            assert done["outcome"] == "8" and "Group" in done["outcomeDesc"]
            assert _patients(done) == []
    finally:
        store.gate.set()
        container.close()


def test_a_type_in_the_error_file_makes_the_completion_a_minor_failure(tmp_path: Path) -> None:
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
            assert test_bulk_export.finish(c, url).json()["error"]
            done = _stage(export_events(c), "complete", url)
            assert len(done) == 6  # the Patients were exported; the Conditions were not
            assert {(e["outcome"], "error file" in e["outcomeDesc"]) for e in done} == {("4", True)}
    finally:
        container.close()


def test_backend_service_export_is_audited_with_its_client(
    smart: TestClient, keys: dict[str, Any]
) -> None:
    admin = auth(token(keys, "system/*.cruds"))
    _load(smart, admin)
    system = auth(token(keys, "system/*.rs", client_id="backend1", sub="svc-account"))
    r = smart.get("/fhir/Patient/$export", params={"_type": "Patient"}, headers={**ASYNC, **system})
    assert r.status_code == 202, r.text
    url = r.headers["content-location"]
    [start] = _stage(export_events(smart, admin), "kick-off", url)
    client = {
        "type": {"coding": [{"system": DCM, "code": "110150", "display": "Application"}]},
        "who": {
            "identifier": {
                "system": "http://fhircare.org/fhir/sid/oauth-client-id",
                "value": "backend1",
            }
        },
        "requestor": True,
        "altId": "svc-account",
    }
    assert start["agent"] == [client]
    manifest = test_bulk_smart._export(smart, system, {"_type": "Patient"})
    files = _download_all(smart, manifest, system, test_smart_api.AUD)
    events = export_events(smart, admin)
    done = _stage(events, "complete", manifest["url"])
    assert {p for e in done for p in _patients(e)} == _held_patients(files)
    assert len(done) == 6
    assert all(e["agent"] == [client] for e in done)
    downloads = _stage(events, "download", manifest["url"])
    assert [d["agent"] for d in downloads] == [[client]] * len(manifest["output"])
    # a refused download records nothing
    other = auth(token(keys, "system/*.rs", client_id="backend2"))
    item = manifest["output"][0]["url"]
    assert smart.get("/fhir" + item[len(test_smart_api.AUD) :], headers=other).status_code == 403
    assert len(_stage(export_events(smart, admin), "download", manifest["url"])) == len(downloads)


@pytest.mark.hapi
def test_export_audit_events_pass_the_hapi_validator(
    audited: TestClient, hapi_base_url: str
) -> None:
    """Each kind of export AuditEvent validates on the real HAPI server (base R4: the
    required action and outcome bindings, sev-1, the Reference and entity shapes)."""
    c = audited
    url = kick_off(c, "/fhir/Group/g1/$export", {"_type": "Patient"})
    manifest = test_bulk_export.finish(c, url).json()
    _download_all(c, {"output": manifest["output"][:1]}, {}, test_bulk_export.BASE)
    failed = kick_off(c, "/fhir/$export", {"_type": "Practitioner"})
    test_bulk_export.finish(c, failed)
    events = export_events(c)
    chosen = [_stage(events, stage, url)[0] for stage in ("kick-off", "complete", "download")]
    chosen.append(_stage(events, "complete", failed)[0])  # no patient entity
    with httpx.Client(base_url=hapi_base_url, timeout=60) as client:
        findings = [validate(client, e) for e in chosen]
    assert [f.messages for f in findings] == [[], [], [], []]
