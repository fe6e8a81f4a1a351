"""Goal progress from new Observations."""

from __future__ import annotations

import pytest

from fhircare.care.goals import on_observation, register
from fhircare.care.plans import apply_plan_definition
from fhircare.services.bus import MessageBus
from fhircare.services.resources import ResourceService
from tests.unit.care_helpers import (
    CM,
    NOW,
    assert_valid,
    make_store,
    observation,
    put,
    seed_patient,
)


@pytest.fixture
def store(tmp_path):
    s = make_store(tmp_path / "db")
    yield s
    s.close()


def achievement(store, goal_id):
    goal = store.read("Goal", goal_id)
    return goal["achievementStatus"]["coding"][0]["code"]


def setup_plan(store, plan="t2dm"):
    patient = seed_patient(store)
    out = apply_plan_definition(store, plan, patient, practitioner_ref=CM, now=NOW)
    goals = {
        g["identifier"][0]["value"].split("/")[1]: g["id"]
        for g in out
        if g["resourceType"] == "Goal"
    }
    return patient, goals


def test_hba1c_progress_in_progress_improving_worsening_achieved(store):
    patient, goals = setup_plan(store)
    hba1c = goals["hba1c"]
    first = observation(store, patient, "a1", "4548-4", 9.1, "%", "2025-03-01")
    written = on_observation(store, first)
    assert [g["id"] for g in written] == [hba1c]  # not the BP goal
    assert_valid(written)
    assert achievement(store, hba1c) == "in-progress"
    on_observation(store, observation(store, patient, "a2", "4548-4", 8.0, "%", "2025-06-01"))
    assert achievement(store, hba1c) == "improving"
    on_observation(store, observation(store, patient, "a3", "4548-4", 8.6, "%", "2025-07-01"))
    assert achievement(store, hba1c) == "worsening"
    on_observation(store, observation(store, patient, "a4", "4548-4", 6.8, "%", "2025-08-01"))
    assert achievement(store, hba1c) == "achieved"
    on_observation(store, observation(store, patient, "a5", "4548-4", 6.5, "%", "2025-09-01"))
    assert achievement(store, hba1c) == "sustaining"
    refs = [r["reference"] for r in store.read("Goal", hba1c)["outcomeReference"]]
    assert refs[0] == "Observation/a1/_history/1" and len(refs) == 5


def test_boundary_is_not_met_for_strict_comparator(store):
    patient, goals = setup_plan(store)
    on_observation(store, observation(store, patient, "a1", "4548-4", 7.0, "%", "2025-03-01"))
    assert achievement(store, goals["hba1c"]) == "in-progress"  # 7.0 is not < 7


def test_idempotent_and_ignores_non_final(store):
    patient, goals = setup_plan(store)
    obs = observation(store, patient, "a1", "4548-4", 6.1, "%", "2025-03-01")
    assert on_observation(store, obs)
    seq = store.last_seq
    assert on_observation(store, obs) == []
    assert store.last_seq == seq
    prelim = observation(
        store, patient, "a2", "4548-4", 9.9, "%", "2025-03-02", status="preliminary"
    )
    assert on_observation(store, prelim) == []


def test_blood_pressure_panel_components(store):
    patient, goals = setup_plan(store, "hypertension")
    bp = goals["bp"]
    panel = put(
        store,
        {
            "resourceType": "Observation",
            "id": "bp1",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
            "subject": {"reference": patient},
            "effectiveDateTime": "2025-03-01",
            "component": [
                {
                    "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                    "valueQuantity": {
                        "value": 142,
                        "unit": "mm[Hg]",
                        "system": "http://unitsofmeasure.org",
                        "code": "mm[Hg]",
                    },
                },
                {
                    "code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
                    "valueQuantity": {
                        "value": 76,
                        "unit": "mm[Hg]",
                        "system": "http://unitsofmeasure.org",
                        "code": "mm[Hg]",
                    },
                },
            ],
        },
    )
    on_observation(store, panel)
    assert achievement(store, bp) == "in-progress"  # systolic not met
    panel2 = dict(panel, id="bp2", effectiveDateTime="2025-04-01")
    panel2["component"] = [dict(c) for c in panel["component"]]
    panel2["component"][0] = dict(
        panel["component"][0], valueQuantity=dict(panel["component"][0]["valueQuantity"], value=124)
    )
    panel2.pop("meta")
    on_observation(store, put(store, panel2))
    assert achievement(store, bp) == "achieved"


def test_range_target_and_bus_wiring(store):
    patient, goals = setup_plan(store, "copd")
    bus = MessageBus()
    register(bus)
    service = ResourceService(store, bus)
    service.create(
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "59408-5"}]},
            "subject": {"reference": patient},
            "effectiveDateTime": "2025-03-02",
            "valueQuantity": {
                "value": 93,
                "unit": "%",
                "system": "http://unitsofmeasure.org",
                "code": "%",
            },
        }
    )
    assert achievement(store, goals["spo2"]) == "achieved"
    assert not bus.failures
