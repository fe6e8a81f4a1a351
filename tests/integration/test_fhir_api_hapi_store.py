"""The same FHIR API tests with the real HAPI server as the store (FHIRCARE_STORE=hapi).

The functions are imported from test_fhir_api, so pytest runs them here a second time with
this module's `client` fixture. Only the tests that do not count resources server-wide are
shared: the HAPI server is shared by the whole session.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

from fhircare.api.app import create_app
from fhircare.config import Settings
from tests.integration.test_fhir_api import (  # noqa: F401 - collected here again
    pid,
    test_bad_input_gets_an_operation_outcome,
    test_batch_runs_each_entry_on_its_own,
    test_conditional_create_returns_existing,
    test_conditional_update_and_delete,
    test_invalid_resource_names_the_failing_element,
    test_prefer_minimal_and_outcome,
    test_search_params_paging_sort_and_include,
    test_transaction_is_atomic_and_rewrites_urn_references,
    test_update_with_client_id_creates_and_if_match_guards,
)

pytestmark = pytest.mark.hapi


@pytest.fixture
def client(hapi_base_url: str, tmp_path) -> Iterator[TestClient]:  # noqa: ANN001
    settings = Settings(
        data=tmp_path / "unused",
        store="hapi",
        hapi_url=hapi_base_url,
        base_url="http://testserver/fhir",
        seed_definitions=False,
        audit=False,
    )
    with TestClient(create_app(settings)) as c:
        yield c


def test_care_cycle_with_hapi_as_the_store(hapi_base_url: str, tmp_path) -> None:  # noqa: ANN001
    """Definitions are seeded into HAPI and the care operations run on it."""
    settings = Settings(
        data=tmp_path / "unused",
        store="hapi",
        hapi_url=hapi_base_url,
        base_url="http://testserver/fhir",
        audit=False,
    )
    with TestClient(create_app(settings)) as c:
        assert c.get("/fhir/PlanDefinition/t2dm").status_code == 200  # seeded into HAPI
        pid = c.post(
            "/fhir/Patient", json={"resourceType": "Patient", "name": [{"family": "OnHapi"}]}
        ).json()["id"]
        cm = c.post(
            "/fhir/Practitioner",
            json={"resourceType": "Practitioner", "name": [{"family": "Manager"}]},
        ).json()["id"]
        r = c.post(
            "/fhir/PlanDefinition/t2dm/$apply",
            params={"subject": f"Patient/{pid}", "practitioner": f"Practitioner/{cm}"},
        )
        assert r.status_code == 201, r.text
        careplan = r.json()
        assert careplan["resourceType"] == "CarePlan"  # R4 $apply returns the CarePlan
        assert careplan["goal"] and any("reference" in a for a in careplan["activity"])
        written = [g["reference"] for g in careplan["goal"]]
        written.append(careplan["careTeam"][0]["reference"])
        for ref in written:
            assert c.get(f"/fhir/{ref}").status_code == 200, ref
    with httpx.Client(base_url=hapi_base_url, timeout=30) as hapi:
        plans = hapi.get("/CarePlan", params={"subject": f"Patient/{pid}"}).json()
        assert plans["total"] == 1
        goals = hapi.get("/Goal", params={"subject": f"Patient/{pid}"}).json()
        assert goals["total"] >= 1
