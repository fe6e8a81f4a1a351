"""Scoring and $extract of assessment responses (fhircare.care.assessment)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from fhircare.care.assessment import extract, register
from fhircare.care.definitions import load_profiles_dir
from fhircare.fhir.errors import Unprocessable
from fhircare.fhir.validation import validate_resource
from fhircare.services.bus import MessageBus
from fhircare.store.base import WriteOp
from fhircare.store.embedded import EmbeddedStore

NOW = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
BASE = "http://fhircare.org/fhir"
CI = f"{BASE}/CodeSystem/care-intake"
PHQ9_ITEMS = [
    "44250-9", "44255-8", "44259-0", "44254-1", "44251-7",
    "44258-2", "44252-5", "44253-3", "44260-8",
]  # fmt: skip
PHQ_ANSWERS = ["LA6568-5", "LA6569-3", "LA6570-1", "LA6571-9"]
HITS = ["LA6270-8", "LA10066-1", "LA10082-8", "LA16644-9", "LA6482-9"]
TYPES = ("Observation", "Condition", "Goal", "ServiceRequest", "Task")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EmbeddedStore]:
    s = EmbeddedStore(tmp_path / "db", fsync=False)
    ops = [
        WriteOp("update", r["resourceType"], id=r["id"], resource=r)
        for r in load_profiles_dir()
        if r["resourceType"] == "Questionnaire"
    ]
    ops += [
        WriteOp("update", "Practitioner", id="pcp", resource={"resourceType": "Practitioner"}),
        WriteOp("update", "Practitioner", id="cm", resource={"resourceType": "Practitioner"}),
        WriteOp(
            "update",
            "Patient",
            id="p1",
            resource={
                "resourceType": "Patient",
                "name": [{"family": "Example", "given": ["Sam"]}],
                "generalPractitioner": [{"reference": "Practitioner/pcp"}],
            },
        ),
    ]
    s.commit(ops)
    yield s
    s.close()


def coded(code: str, system: str = LOINC) -> dict[str, Any]:
    return {"valueCoding": {"system": system, "code": code}}


def save(store: EmbeddedStore, qr: dict[str, Any], qr_id: str = "qr1") -> str:
    qr = {
        "resourceType": "QuestionnaireResponse",
        "status": "completed",
        "subject": {"reference": "Patient/p1"},
        "authored": "2025-03-03T08:30:00Z",
        **qr,
    }
    store.commit([WriteOp("update", "QuestionnaireResponse", id=qr_id, resource=qr)])
    return qr_id


def phq9(scores: list[int]) -> dict[str, Any]:
    return {
        "questionnaire": f"{BASE}/Questionnaire/phq-9",
        "item": [
            {"linkId": link, "answer": [coded(PHQ_ANSWERS[s])]}
            for link, s in zip(PHQ9_ITEMS, scores, strict=True)
        ],
    }


def ahc(
    *,
    living: str = "LA31993-1",
    food: tuple[str, str] = ("LA28398-8", "LA28398-8"),
    transport: str = "LA32-8",
    utilities: str = "LA32-8",
    safety: tuple[int, int, int, int] = (1, 1, 1, 1),
) -> dict[str, Any]:
    def q(link: str, *codes: str) -> dict[str, Any]:
        return {"linkId": link, "answer": [coded(c) for c in codes]}

    return {
        "questionnaire": f"{BASE}/Questionnaire/ahc-hrsn-core",
        "item": [
            {"linkId": "living-situation", "item": [q("71802-3", living), q("96778-6", "LA9-3")]},
            {"linkId": "food", "item": [q("88122-7", food[0]), q("88123-5", food[1])]},
            {"linkId": "transportation", "item": [q("93030-5", transport)]},
            {"linkId": "utilities", "item": [q("96779-4", utilities)]},
            {
                "linkId": "safety",
                "item": [
                    q(link, HITS[s - 1])
                    for link, s in zip(
                        ("95618-5", "95617-7", "95616-9", "95615-1"), safety, strict=True
                    )
                ],
            },
        ],
    }


def of_type(resources: list[dict[str, Any]], rtype: str) -> list[dict[str, Any]]:
    return [r for r in resources if r["resourceType"] == rtype]


def codes(concept: dict[str, Any]) -> set[tuple[str, str]]:
    return {(c["system"], c["code"]) for c in concept.get("coding", [])}


def counts(store: EmbeddedStore) -> dict[str, int]:
    return {t: store.count(t) for t in TYPES}


def assert_conformant(resources: list[dict[str, Any]]) -> None:
    for r in resources:
        validate_resource(r)
        assert r["meta"]["profile"][0].startswith(f"{BASE}/StructureDefinition/fhircare-")


# ---- PHQ-9 / PHQ-2 ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scores", "total", "band"),
    [
        ([0, 1, 0, 1, 0, 1, 0, 1, 0], 4, "minimal"),
        ([1, 1, 1, 1, 1, 0, 0, 0, 0], 5, "mild"),
        ([2, 2, 1, 1, 1, 1, 1, 1, 0], 10, "moderate"),
        ([2, 2, 2, 2, 2, 2, 2, 1, 0], 15, "moderately-severe"),
        ([3, 3, 3, 3, 2, 2, 2, 2, 0], 20, "severe"),
        ([3, 3, 3, 3, 3, 3, 3, 3, 3], 27, "severe"),
    ],
)
def test_phq9_total_and_severity(
    store: EmbeddedStore, scores: list[int], total: int, band: str
) -> None:
    out = extract(store, save(store, phq9(scores)), now=NOW)
    (obs,) = of_type(out, "Observation")
    assert codes(obs["code"]) == {(LOINC, "44261-6")}
    assert obs["valueQuantity"]["value"] == total
    assert obs["interpretation"][0]["coding"][0] == {
        "system": f"{BASE}/CodeSystem/phq-severity",
        "code": band,
        "display": obs["interpretation"][0]["coding"][0]["display"],
    }
    assert obs["category"][0]["coding"][0]["code"] == "survey"
    assert obs["derivedFrom"] == [{"reference": "QuestionnaireResponse/qr1/_history/1"}]
    assert obs["subject"] == {"reference": "Patient/p1"}
    assert len(of_type(out, "Task")) == (1 if scores[8] > 0 else 0)
    assert_conformant(out)


def test_phq9_item9_positive_opens_urgent_task_for_the_gp(store: EmbeddedStore) -> None:
    out = extract(store, save(store, phq9([0, 0, 0, 0, 0, 0, 0, 0, 1])), now=NOW)
    (task,) = of_type(out, "Task")
    assert task["priority"] == "stat"
    assert task["status"] == "requested" and task["intent"] == "order"
    assert task["description"] == "PHQ-9 item 9 positive: same-day suicide risk assessment"
    assert task["owner"] == {"reference": "Practitioner/pcp"}
    assert task["for"] == {"reference": "Patient/p1"}
    assert task["restriction"]["period"]["end"] == "2025-03-04T09:00:00Z"
    (obs,) = of_type(out, "Observation")
    assert task["reasonReference"] == {"reference": f"Observation/{obs['id']}"}
    assert store.read("Task", task["id"])["priority"] == "stat"
    assert_conformant(out)


def test_item9_task_goes_to_the_care_team_care_manager(store: EmbeddedStore) -> None:
    store.commit(
        [
            WriteOp(
                "update",
                "CareTeam",
                id="ct1",
                resource={
                    "resourceType": "CareTeam",
                    "status": "active",
                    "subject": {"reference": "Patient/p1"},
                    "participant": [
                        {
                            "role": [{"text": "Primary care"}],
                            "member": {"reference": "Practitioner/pcp"},
                        },
                        {
                            "role": [{"text": "Care manager"}],
                            "member": {"reference": "Practitioner/cm"},
                        },
                    ],
                },
            )
        ]
    )
    out = extract(store, save(store, phq9([0, 0, 0, 0, 0, 0, 0, 0, 2])), now=NOW)
    (task,) = of_type(out, "Task")
    assert task["owner"] == {"reference": "Practitioner/cm"}


def test_item9_task_unassigned_without_care_manager(store: EmbeddedStore) -> None:
    store.commit([WriteOp("update", "Patient", id="p1", resource={"resourceType": "Patient"})])
    out = extract(store, save(store, phq9([0, 0, 0, 0, 0, 0, 0, 0, 3])), now=NOW)
    (task,) = of_type(out, "Task")
    assert "owner" not in task
    assert task["requester"]  # owner or requester is always present


def test_item9_zero_opens_no_task(store: EmbeddedStore) -> None:
    extract(store, save(store, phq9([3, 3, 3, 3, 3, 3, 3, 3, 0])), now=NOW)
    assert store.count("Task") == 0


@pytest.mark.parametrize(
    ("a", "b", "band", "pos"), [(1, 1, "negative", "NEG"), (2, 1, "positive", "POS")]
)
def test_phq2(store: EmbeddedStore, a: int, b: int, band: str, pos: str) -> None:
    qr = {
        "questionnaire": f"{BASE}/Questionnaire/phq-2",
        "item": [
            {"linkId": "44250-9", "answer": [coded(PHQ_ANSWERS[a])]},
            {"linkId": "44255-8", "answer": [coded(PHQ_ANSWERS[b])]},
        ],
    }
    (obs,) = extract(store, save(store, qr), now=NOW)
    assert codes(obs["code"]) == {(LOINC, "55758-7")}
    assert obs["valueQuantity"]["value"] == a + b
    got = {c["code"] for c in obs["interpretation"][0]["coding"]}
    assert got == {band, pos}
    assert_conformant([obs])


def test_scores_a_loinc_coded_questionnaire_without_ordinals(store: EmbeddedStore) -> None:
    """A PHQ-9 from elsewhere ('/code' linkIds, no ordinalValue) is scored from the mapping."""
    items = [
        {
            "linkId": f"/{c}",
            "code": [{"system": LOINC, "code": c}],
            "type": "choice",
            "answerOption": [{"valueCoding": {"system": LOINC, "code": a}} for a in PHQ_ANSWERS],
        }
        for c in PHQ9_ITEMS
    ]
    q = {
        "resourceType": "Questionnaire",
        "url": "http://example.org/Questionnaire/phq9",
        "status": "active",
        "code": [{"system": LOINC, "code": "44249-1"}],
        "item": items,
    }
    store.commit([WriteOp("update", "Questionnaire", id="ext-phq9", resource=q)])
    qr = {
        "questionnaire": q["url"],
        "item": [{"linkId": f"/{c}", "answer": [coded(PHQ_ANSWERS[2])]} for c in PHQ9_ITEMS],
    }
    out = extract(store, save(store, qr), now=NOW)
    assert of_type(out, "Observation")[0]["valueQuantity"]["value"] == 18
    assert len(of_type(out, "Task")) == 1


# ---- AHC HRSN -------------------------------------------------------------------------------


def test_ahc_food_and_transport_positive(store: EmbeddedStore) -> None:
    qr = ahc(food=("LA6729-3", "LA28397-0"), transport="LA33-6")
    out = extract(store, save(store, qr), now=NOW)
    conditions = of_type(out, "Condition")
    assert len(conditions) == 2
    by_domain = {c["code"]["coding"][0]["code"]: codes(c["code"]) for c in conditions}
    assert {(SNOMED, "733423003"), (ICD10, "Z59.41")} <= by_domain["food-insecurity"]
    assert {(SNOMED, "713458007"), (ICD10, "Z59.82")} <= by_domain["transportation-insecurity"]
    for c in conditions:
        cats = set().union(*(codes(x) for x in c["category"]))
        assert (
            "http://hl7.org/fhir/us/core/CodeSystem/condition-category",
            "health-concern",
        ) in cats
        assert ("http://hl7.org/fhir/us/core/CodeSystem/us-core-tags", "sdoh") in cats
        assert c["evidence"] == [{"detail": [{"reference": "QuestionnaireResponse/qr1"}]}]
    goals = of_type(out, "Goal")
    assert len(goals) == 2
    assert {g["lifecycleStatus"] for g in goals} == {"proposed"}
    cond_refs = {f"Condition/{c['id']}" for c in conditions}
    assert {g["addresses"][0]["reference"] for g in goals} == cond_refs
    requests = of_type(out, "ServiceRequest")
    tasks = of_type(out, "Task")
    assert len(requests) == 2 and len(tasks) == 2
    assert {r["reasonReference"][0]["reference"] for r in requests} == cond_refs
    assert {t["focus"]["reference"] for t in tasks} == {
        f"ServiceRequest/{r['id']}" for r in requests
    }
    for t in tasks:
        assert t["status"] == "requested" and t["intent"] == "order"
        assert ("http://hl7.org/fhir/CodeSystem/task-code", "fulfill") in codes(t["code"])
    (hits,) = of_type(out, "Observation")  # safety total, negative here
    assert hits["valueQuantity"]["value"] == 4
    assert hits["interpretation"][0]["coding"][0]["code"] == "NEG"
    for r in out:  # every reference inside the commit resolves
        for ref in [x.get("reference") for x in [r.get("focus"), *(r.get("addresses") or [])] if x]:
            kind, _, rid = ref.partition("/")
            assert store.exists(kind, rid)
    assert_conformant(out)


def test_ahc_negative_screen_writes_only_the_safety_score(store: EmbeddedStore) -> None:
    out = extract(store, save(store, ahc()), now=NOW)
    assert [r["resourceType"] for r in out] == ["Observation"]
    assert store.count("Condition") == 0


def test_ahc_safety_and_housing(store: EmbeddedStore) -> None:
    out = extract(store, save(store, ahc(living="LA31995-6", safety=(3, 3, 3, 2))), now=NOW)
    domains = {c["code"]["coding"][0]["code"] for c in of_type(out, "Condition")}
    assert domains == {"homelessness", "interpersonal-safety"}
    hits = of_type(out, "Observation")[0]
    assert hits["valueQuantity"]["value"] == 11
    assert hits["interpretation"][0]["coding"][0]["code"] == "POS"
    assert len(of_type(out, "ServiceRequest")) == 1  # housing only: no safety referral kind
    assert_conformant(out)


def test_an_active_concern_is_not_duplicated_by_a_later_screen(store: EmbeddedStore) -> None:
    extract(store, save(store, ahc(food=("LA6729-3", "LA6729-3"))), now=NOW)
    before = counts(store)
    out = extract(store, save(store, ahc(food=("LA28397-0", "LA6729-3")), "qr2"), now=NOW)
    assert not of_type(out, "Condition")
    after = counts(store)
    assert after["Condition"] == before["Condition"] == 1
    assert after["Observation"] == before["Observation"] + 1  # the new safety score


# ---- care intake -----------------------------------------------------------------------------


def intake(adl: list[str], barriers: list[str], support: bool = True) -> dict[str, Any]:
    support_items: list[dict[str, Any]] = [
        {"linkId": "has-support", "answer": [{"valueBoolean": support}]}
    ]
    if support:
        support_items.append(
            {"linkId": "support-person", "answer": [{"valueString": "Kim (daughter)"}]}
        )
    return {
        "questionnaire": f"{BASE}/Questionnaire/care-intake",
        "item": [
            {
                "linkId": "functional",
                "item": [{"linkId": "adl-help", "answer": [coded(a, CI) for a in adl]}],
            },
            {"linkId": "support", "item": support_items},
            {
                "linkId": "barriers-group",
                "item": [{"linkId": "barriers", "answer": [coded(b, CI) for b in barriers]}],
            },
        ],
    }


def test_care_intake(store: EmbeddedStore) -> None:
    out = extract(
        store, save(store, intake(["bathing", "dressing"], ["medication-cost"], False)), now=NOW
    )
    obs = {o["code"]["coding"][0]["code"]: o for o in of_type(out, "Observation")}
    assert obs["adl-dependence"]["valueInteger"] == 2
    assert obs["support-available"]["valueBoolean"] is False
    (cond,) = of_type(out, "Condition")
    assert cond["code"]["coding"] == [
        {
            "system": f"{BASE}/CodeSystem/sdoh-domain",
            "code": "medication-cost",
            "display": "Cannot afford medicines",
        }
    ]
    assert len(of_type(out, "ServiceRequest")) == 1
    assert_conformant(out)


def test_care_intake_without_needs(store: EmbeddedStore) -> None:
    out = extract(store, save(store, intake(["none"], ["none"])), now=NOW)
    obs = {o["code"]["coding"][0]["code"]: o for o in of_type(out, "Observation")}
    assert obs["adl-dependence"]["valueInteger"] == 0
    assert len(out) == 2


# ---- idempotency, versions, errors, bus ------------------------------------------------------


def test_extract_twice_returns_the_same_outputs_without_writing(store: EmbeddedStore) -> None:
    qr_id = save(store, ahc(food=("LA6729-3", "LA6729-3"), transport="LA33-6"))
    first = extract(store, qr_id, now=NOW)
    seq = store.last_seq
    second = extract(store, qr_id, now=datetime(2025, 4, 1, tzinfo=UTC))
    assert store.last_seq == seq
    assert [(r["resourceType"], r["id"], r["meta"]["versionId"]) for r in second] == [
        (r["resourceType"], r["id"], r["meta"]["versionId"]) for r in first
    ]


def test_replay_after_lost_bookkeeping_writes_nothing_new(store: EmbeddedStore) -> None:
    qr_id = save(store, phq9([0, 0, 0, 0, 0, 0, 0, 0, 1]))
    first = extract(store, qr_id, now=NOW)
    store.set_meta("assessment.extract/" + qr_id, None)  # as if we crashed after the commit
    before = counts(store)
    again = extract(store, qr_id, now=NOW)
    assert counts(store) == before
    assert {r["id"] for r in again} == {r["id"] for r in first}


def test_amended_response_updates_the_score(store: EmbeddedStore) -> None:
    qr_id = save(store, phq9([1, 1, 1, 1, 1, 0, 0, 0, 0]))
    (obs,) = extract(store, qr_id, now=NOW)
    save(store, {**phq9([2, 2, 2, 2, 2, 2, 0, 0, 0]), "status": "amended"}, qr_id)
    (again,) = extract(store, qr_id, now=NOW)
    assert again["id"] == obs["id"] and again["meta"]["versionId"] == "2"
    assert again["status"] == "amended"
    assert again["valueQuantity"]["value"] == 12
    assert again["derivedFrom"] == [{"reference": f"QuestionnaireResponse/{qr_id}/_history/2"}]
    assert store.count("Observation") == 1


def test_in_progress_response_is_not_extracted(store: EmbeddedStore) -> None:
    qr_id = save(store, {**phq9([0] * 9), "status": "in-progress"})
    with pytest.raises(Unprocessable) as info:
        extract(store, qr_id, now=NOW)
    assert info.value.expression == ["QuestionnaireResponse.status"]


def test_invalid_response_is_rejected_and_nothing_written(store: EmbeddedStore) -> None:
    qr = phq9([0] * 9)
    qr["item"][3]["answer"] = [{"valueInteger": 2}]
    qr_id = save(store, qr)
    with pytest.raises(Unprocessable) as info:
        extract(store, qr_id, now=NOW)
    assert info.value.expression == ["QuestionnaireResponse.item[3].answer[0]"]
    assert counts(store) == dict.fromkeys(TYPES, 0)


def test_bus_handler_extracts_once(store: EmbeddedStore) -> None:
    bus = MessageBus()
    register(bus)
    qr_id = save(store, phq9([0, 0, 0, 0, 0, 0, 0, 0, 1]))
    qr = store.read("QuestionnaireResponse", qr_id)
    written = bus.publish(store, [qr])
    assert sorted(r["resourceType"] for r in written) == ["Observation", "Task"]
    assert bus.publish(store, [qr]) == []
    assert not bus.failures and bus.failure_count == 0
    draft = {**qr, "status": "in-progress"}
    assert bus.publish(store, [draft]) == []


def test_bus_check_refuses_a_nonconforming_response(store: EmbeddedStore) -> None:
    bus = MessageBus()
    register(bus)
    good = {"resourceType": "QuestionnaireResponse", "status": "completed", **phq9([1] * 9)}
    bus.run_checks(store, None, good)
    bad = {**good, "item": good["item"][:8]}
    with pytest.raises(Unprocessable) as info:
        bus.run_checks(store, None, bad)
    assert "44260-8" in info.value.diagnostics
    unknown = {**bad, "questionnaire": "http://example.org/Questionnaire/other"}
    bus.run_checks(store, None, unknown)  # not ours to judge


A_FILES = (
    "Questionnaire-phq-9", "Questionnaire-phq-2", "Questionnaire-ahc-hrsn-core",
    "Questionnaire-care-intake", "CodeSystem-sdoh-domain", "CodeSystem-sdoh-goal",
    "CodeSystem-phq-severity", "CodeSystem-assessment-task", "CodeSystem-care-intake",
    "StructureDefinition-fhircare-questionnaire",
    "StructureDefinition-fhircare-questionnaireresponse",
    "StructureDefinition-fhircare-condition",
    "StructureDefinition-fhircare-observation-screening",
)  # fmt: skip


def test_assessment_artifacts_are_valid_fhir() -> None:
    loaded = {f"{r['resourceType']}-{r['id']}": r for r in load_profiles_dir()}
    for name in A_FILES:
        resource = loaded[name]
        validate_resource(resource)
        if resource["resourceType"] in ("Questionnaire", "CodeSystem", "StructureDefinition"):
            assert resource["url"].startswith(f"{BASE}/")
            assert resource["url"].endswith(f"/{resource['id']}")
