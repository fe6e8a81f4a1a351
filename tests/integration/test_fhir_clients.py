"""The FHIR clients people use, against a real `fhircare serve` on loopback: fhirpy (sync
and async) and fhirclient (client-py). Search builders, paging, count(), includes with *,
has(), chains and elements() must give the right answers."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fhirclient import client as smart_client
from fhirclient.models.careplan import CarePlan as FcCarePlan
from fhirclient.models.patient import Patient as FcPatient
from fhirpy import AsyncFHIRClient, SyncFHIRClient

from tests.conftest import ServerProcess


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    srv = ServerProcess(Path(tmp_path_factory.mktemp("clients")) / "data").start()
    fhir = {"Content-Type": "application/fhir+json"}
    seed = [
        {"resourceType": "Organization", "id": "hosp", "name": "General Hospital"},
        {"resourceType": "Practitioner", "id": "gp", "name": [{"family": "House"}], "active": True},
        {
            "resourceType": "Patient",
            "id": "pa",
            "name": [{"family": "Chalmers", "given": ["Peter"]}],
            "gender": "male",
            "generalPractitioner": [{"reference": "Practitioner/gp"}],
            "managingOrganization": {"reference": "Organization/hosp"},
        },
        {
            "resourceType": "Patient",
            "id": "pb",
            "name": [{"family": "Windsor"}],
            "gender": "female",
        },
    ]
    for i in range(3):
        seed.append(
            {
                "resourceType": "CarePlan",
                "id": f"cp{i}",
                "status": "active",
                "intent": "plan",
                "subject": {"reference": "Patient/pa"},
            }
        )
    seed.append(
        {
            "resourceType": "CarePlan",
            "id": "cpb",
            "status": "draft",
            "intent": "plan",
            "subject": {"reference": "Patient/pb"},
        }
    )
    seed.append(
        {
            "resourceType": "Observation",
            "id": "obs",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "72166-2"}]},
            "subject": {"reference": "Patient/pb"},
        }
    )
    with httpx.Client(base_url=srv.base) as c:
        for r in seed:
            put = c.put(f"/{r['resourceType']}/{r['id']}", json=r, headers=fhir)
            assert put.status_code == 201, put.text
    yield srv.base
    srv.stop()


def ids(resources: list) -> list[str]:
    return sorted(f"{r['resourceType']}/{r['id']}" for r in resources)


def test_fhirpy_search_paging_and_count(base: str) -> None:
    client = SyncFHIRClient(base)
    plans = client.resources("CarePlan").search(subject="Patient/pa").limit(2).fetch_all()
    assert ids(plans) == ["CarePlan/cp0", "CarePlan/cp1", "CarePlan/cp2"]
    assert client.resources("CarePlan").search(status="active").count() == 3
    assert client.resources("CarePlan").count() == 4
    assert client.resources("Patient").search(gender="female").first()["id"] == "pb"


def test_fhirpy_chains_has_includes_elements(base: str) -> None:
    client = SyncFHIRClient(base)
    chained = client.resources("CarePlan").search(subject__Patient__family="Chalmers").fetch_all()
    assert ids(chained) == ["CarePlan/cp0", "CarePlan/cp1", "CarePlan/cp2"]
    deep = (
        client.resources("CarePlan")
        .search(subject__Patient__general_practitioner__Practitioner__family="House")
        .fetch_all()
    )
    assert len(deep) == 3
    has = client.resources("Patient").has("Observation", "patient", code="72166-2").fetch_all()
    assert ids(has) == ["Patient/pb"]
    raw = client.resources("CarePlan").search(_id="cp0").include("CarePlan", "*").fetch_raw()
    included = [e["resource"] for e in raw["entry"] if e["search"]["mode"] == "include"]
    assert ids(included) == ["Patient/pa"]
    raw = (
        client.resources("Patient")
        .search(_id="pa")
        .include("Patient", "general-practitioner")
        .revinclude("CarePlan", "subject")
        .fetch_raw()
    )
    assert ids([e["resource"] for e in raw["entry"]]) == [
        "CarePlan/cp0",
        "CarePlan/cp1",
        "CarePlan/cp2",
        "Patient/pa",
        "Practitioner/gp",
    ]
    (patient,) = client.resources("Patient").search(_id="pa").elements("name").fetch()
    assert set(patient.keys()) <= {"resourceType", "id", "meta", "name"}
    assert patient["name"][0]["family"] == "Chalmers" and "gender" not in patient


def test_fhirpy_async(base: str) -> None:
    async def run() -> tuple[int, list]:
        client = AsyncFHIRClient(base)
        count = await client.resources("CarePlan").search(status="draft").count()
        found = await client.resources("Patient").search(name="wind").fetch_all()
        return count, found

    count, found = asyncio.run(run())
    assert count == 1
    assert ids(found) == ["Patient/pb"]


def test_fhirpy_unknown_parameter_is_an_error_not_an_empty_answer(base: str) -> None:
    from fhirpy.base.exceptions import OperationOutcome

    client = SyncFHIRClient(base)
    with pytest.raises(OperationOutcome, match="Valid search parameters"):
        client.resources("Patient").search(colour="blue").fetch()


def test_fhirclient_search_and_include(base: str) -> None:
    smart = smart_client.FHIRClient(settings={"app_id": "fhircare-test", "api_base": base + "/"})
    patients = FcPatient.where(struct={"family": "chalmers"}).perform_resources(smart.server)
    assert [p.id for p in patients] == ["pa"]
    search = FcCarePlan.where(struct={"subject": "Patient/pa"}).include("subject")
    found = search.perform_resources(smart.server)
    kinds = sorted(f"{r.resource_type}/{r.id}" for r in found)
    assert kinds == ["CarePlan/cp0", "CarePlan/cp1", "CarePlan/cp2", "Patient/pa"]
    rev = FcPatient.where(struct={"_id": "pb"}).include("subject", FcCarePlan, reverse=True)
    assert sorted(r.id for r in rev.perform_resources(smart.server)) == ["cpb", "pb"]
