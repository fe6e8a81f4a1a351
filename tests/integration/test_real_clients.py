"""fhircare as FHIR client libraries meet it: fhirpy (sync and async) and client-py
(fhirclient) driving a real `fhircare serve` process on loopback.

Each test makes its own patient (a unique identifier), so the module shares one server.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
import requests
from fhirclient import client as smart_client
from fhirclient import server as smart_server
from fhirclient.models.bundle import Bundle, BundleEntry
from fhirclient.models.capabilitystatement import CapabilityStatement
from fhirclient.models.observation import Observation
from fhirclient.models.patient import Patient
from fhirpy import AsyncFHIRClient, SyncFHIRClient
from fhirpy.base.exceptions import MultipleResourcesFound, OperationOutcome, ResourceNotFound

from tests.conftest import ServerProcess

MRN = "urn:oid:2.16.840.1.113883.19.5"


def _mrn() -> str:
    return uuid.uuid4().hex[:12]


@pytest.fixture
def fhirpy_client(served_fhircare: ServerProcess) -> SyncFHIRClient:
    return SyncFHIRClient(served_fhircare.base)


@pytest.fixture
def smart(served_fhircare: ServerProcess) -> smart_server.FHIRServer:
    """client-py's server object (its base URL ends with '/', as client-py makes it)."""
    fhir = smart_client.FHIRClient(
        settings={"app_id": "fhircare-tests", "api_base": served_fhircare.base}
    )
    assert fhir.server.base_uri.endswith("/fhir/")
    return fhir.server


def _observation(patient_id: str, value: float) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "valueQuantity": {
            "value": value,
            "unit": "kg",
            "system": "http://unitsofmeasure.org",
            "code": "kg",
        },
    }


# ---- fhirpy (sync) ------------------------------------------------------------------------


def test_fhirpy_crud_save_update_delete(fhirpy_client: SyncFHIRClient) -> None:
    mrn = _mrn()
    patient = fhirpy_client.resource(
        "Patient", identifier=[{"system": MRN, "value": mrn}], name=[{"family": "Crud"}]
    )
    patient.save()
    assert patient.id and patient["meta"]["versionId"] == "1"
    read = fhirpy_client.reference("Patient", patient.id).to_resource()
    assert read["name"] == [{"family": "Crud"}]
    read["active"] = True
    read.save()
    assert read["meta"]["versionId"] == "2"
    read["gender"] = "female"
    read.update()
    again = fhirpy_client.get("Patient", patient.id)
    assert (again["active"], again["gender"], again["meta"]["versionId"]) == (True, "female", "3")
    read.delete()
    with pytest.raises(ResourceNotFound):
        fhirpy_client.get("Patient", patient.id)


def test_fhirpy_patch_and_conditional_patch(fhirpy_client: SyncFHIRClient) -> None:
    mrn = _mrn()
    patient = fhirpy_client.resource(
        "Patient", identifier=[{"system": MRN, "value": mrn}], gender="male"
    )
    patient.save()
    patched = fhirpy_client.patch("Patient", patient.id, active=True, gender=None)
    assert patched["active"] is True and "gender" not in patched
    patient.patch(birthDate="1970-05-06")  # resource.patch: PATCH with the named fields
    assert fhirpy_client.get("Patient", patient.id)["birthDate"] == "1970-05-06"
    found = fhirpy_client.resources("Patient").search(identifier=f"{MRN}|{mrn}")
    found.patch(active=False)
    current = fhirpy_client.get("Patient", patient.id)
    assert current["active"] is False and current["meta"]["versionId"] == "4"
    with pytest.raises(OperationOutcome) as exc:  # an invalid result is refused (422)
        fhirpy_client.patch("Patient", patient.id, birthDate="not a date")
    assert "birthDate" in str(exc.value)


def test_fhirpy_get_or_create_twice_makes_one(fhirpy_client: SyncFHIRClient) -> None:
    mrn = _mrn()
    body = fhirpy_client.resource(
        "Patient", identifier=[{"system": MRN, "value": mrn}], name=[{"family": "Once"}]
    )
    search = fhirpy_client.resources("Patient").search(identifier=f"{MRN}|{mrn}")
    first, created = search.get_or_create(body)
    second, created_again = search.get_or_create(body)
    assert (created, created_again) == (True, False)
    assert first.id == second.id
    assert len(search.fetch_all()) == 1  # count() is the search side (_totalMethod)
    fhirpy_client.resource("Patient", identifier=[{"system": MRN, "value": mrn}]).save()
    with pytest.raises(MultipleResourcesFound):  # 412: two now match
        search.get_or_create(body)


def test_fhirpy_conditional_update(fhirpy_client: SyncFHIRClient) -> None:
    mrn = _mrn()
    search = fhirpy_client.resources("Patient").search(identifier=f"{MRN}|{mrn}")
    body = fhirpy_client.resource("Patient", identifier=[{"system": MRN, "value": mrn}])
    made, created = search.update(body)
    assert created
    body["active"] = True
    updated, created = search.update(body)
    assert not created and updated.id == made.id and updated["active"] is True
    assert len(search.fetch_all()) == 1  # count() is the search side (_totalMethod)


def test_fhirpy_pages_through_a_search(fhirpy_client: SyncFHIRClient) -> None:
    patient = fhirpy_client.resource("Patient", identifier=[{"system": MRN, "value": _mrn()}])
    patient.save()
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": _observation(patient.id, 60 + i),
                "request": {"method": "POST", "url": "Observation"},
            }
            for i in range(23)
        ],
    }
    fhirpy_client.execute("", method="post", data=bundle)
    search = fhirpy_client.resources("Observation").search(subject=f"Patient/{patient.id}")
    values = [o["valueQuantity"]["value"] for o in search.limit(5)]  # follows next links
    assert sorted(values) == [60 + i for i in range(23)]
    assert len(search.limit(5).fetch()) == 5
    assert len(search.limit(5).fetch_all()) == 23


def test_fhirpy_operations(fhirpy_client: SyncFHIRClient) -> None:
    doctor = fhirpy_client.resource("Practitioner", name=[{"family": "Doctor"}])
    doctor.save()
    patient = fhirpy_client.resource(
        "Patient",
        identifier=[{"system": MRN, "value": _mrn()}],
        generalPractitioner=[{"reference": f"Practitioner/{doctor.id}"}],
    )
    patient.save()
    fhirpy_client.resource("Observation", **_observation(patient.id, 70)).save()
    plan = fhirpy_client.execute(
        "PlanDefinition/t2dm/$apply", method="post", params={"subject": f"Patient/{patient.id}"}
    )
    assert (
        plan["resourceType"] == "CarePlan"
        and plan["subject"]["reference"] == f"Patient/{patient.id}"
    )
    everything = fhirpy_client.execute(f"Patient/{patient.id}/$everything", method="get")
    types = {e["resource"]["resourceType"] for e in everything["entry"]}
    assert {"Patient", "Observation", "CarePlan", "Goal", "Practitioner"} <= types
    outcome = fhirpy_client.execute(
        "Patient/$validate", method="post", data={"resourceType": "Patient", "gender": "nope"}
    )
    assert outcome["issue"][0]["severity"] == "error"
    with pytest.raises(ResourceNotFound):
        fhirpy_client.execute("Patient/nobody/$everything", method="get")


def test_fhirpy_errors_are_typed(fhirpy_client: SyncFHIRClient) -> None:
    with pytest.raises(ResourceNotFound):
        fhirpy_client.get("Patient", "does-not-exist")
    with pytest.raises(OperationOutcome) as exc:
        fhirpy_client.resource("Patient", gender="nope").save()
    assert exc.value.resource["resourceType"] == "OperationOutcome"
    with pytest.raises(OperationOutcome):
        fhirpy_client.resources("Patient").search(nonsense="1").fetch()


# ---- fhirpy (async) -----------------------------------------------------------------------


def test_fhirpy_async_round_trip(served_fhircare: ServerProcess) -> None:
    async def scenario() -> None:
        client = AsyncFHIRClient(served_fhircare.base)
        mrn = _mrn()
        patient = client.resource("Patient", identifier=[{"system": MRN, "value": mrn}])
        await patient.save()
        patched = await client.patch("Patient", patient.id, active=True)
        assert patched["active"] is True
        search = client.resources("Patient").search(identifier=f"{MRN}|{mrn}")
        again, created = await search.get_or_create(patient)
        assert not created and again.id == patient.id
        for i in range(4):
            await client.resource("Observation", **_observation(patient.id, i)).save()
        observations = client.resources("Observation").search(subject=f"Patient/{patient.id}")
        assert len(await observations.limit(3).fetch_all()) == 4

        with pytest.raises(OperationOutcome, match="is referenced by Observation/"):
            await patient.delete()  # referential integrity, as HAPI by default
        for observation in await observations.fetch_all():
            await observation.delete()
        await patient.delete()
        with pytest.raises(ResourceNotFound):
            await client.get("Patient", patient.id)

    asyncio.run(scenario())


# ---- client-py (fhirclient) ---------------------------------------------------------------


def test_client_py_reads_the_capability_statement(smart: smart_server.FHIRServer) -> None:
    smart.get_capability(force=True)
    cs = smart.capabilityStatement
    assert isinstance(cs, CapabilityStatement) and cs.fhirVersion == "4.0.1"
    patient = next(r for r in cs.rest[0].resource if r.type == "Patient")
    assert "patch" in {i.code for i in patient.interaction}


def test_client_py_crud(smart: smart_server.FHIRServer) -> None:
    made = Patient({"identifier": [{"system": MRN, "value": _mrn()}], "name": [{"family": "Py"}]})
    created = made.create(smart)
    pid = created["id"]
    patient = Patient.read(pid, smart)
    assert patient.name[0].family == "Py"
    patient.active = True
    updated = patient.update(smart)
    assert updated["meta"]["versionId"] == "2"
    assert Patient.read(pid, smart).active is True
    patient.delete(smart)
    with pytest.raises(requests.HTTPError) as exc:  # deleted: 410 Gone, as HAPI answers
        Patient.read(pid, smart)
    assert exc.value.response.status_code == 410


def test_client_py_transaction_to_the_base_with_a_slash_and_paging(
    smart: smart_server.FHIRServer,
) -> None:
    pid = Patient({"identifier": [{"system": MRN, "value": _mrn()}]}).create(smart)["id"]
    bundle = Bundle({"type": "transaction", "entry": []})
    bundle.entry = [
        BundleEntry(
            {
                "resource": _observation(pid, 50 + i),
                "request": {"method": "POST", "url": "Observation"},
            }
        )
        for i in range(12)
    ]
    response = bundle.create(smart)  # POST {base}/ : the trailing slash is served, not 307
    assert response["type"] == "transaction-response" and len(response["entry"]) == 12
    search = Observation.where(struct={"subject": f"Patient/{pid}", "_count": "5"})
    found = list(search.perform_resources_iter(smart))
    assert sorted(o.valueQuantity.value for o in found) == [50 + i for i in range(12)]
    pages = list(search.perform_iter(smart))
    assert len(pages) == 3


def test_client_py_errors(smart: smart_server.FHIRServer) -> None:
    with pytest.raises(smart_server.FHIRNotFoundException):
        Patient.read("does-not-exist", smart)
    with pytest.raises(requests.HTTPError) as exc:
        smart.post_json("Patient", {"resourceType": "Patient", "gender": "nope"})
    assert exc.value.response.status_code == 422
    assert exc.value.response.json()["resourceType"] == "OperationOutcome"


# ---- URLs with trailing slashes, over the wire ---------------------------------------------


def test_trailing_slash_urls_over_http(served_fhircare: ServerProcess) -> None:
    with httpx.Client(base_url=served_fhircare.base + "/", follow_redirects=False) as http:
        assert http.get("metadata/").status_code == 200
        made = http.post("Patient/", json={"resourceType": "Patient"})
        assert made.status_code == 201
        assert http.get(f"Patient/{made.json()['id']}/").status_code == 200
        assert http.get("Patient/", params={"_id": made.json()["id"]}).json()["total"] == 1
        batch = {"resourceType": "Bundle", "type": "batch", "entry": []}
        assert http.post("", json=batch).status_code == 200  # POST {base}/
