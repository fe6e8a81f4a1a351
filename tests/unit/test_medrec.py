"""Discharge medication reconciliation: identification, matching, issues, FHIR outputs."""

from __future__ import annotations

from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class
from rich.table import Table

from fhircare.fhir.errors import BadRequest
from fhircare.transitions.medications import identify_concept, load_tables, parse_dosage
from fhircare.transitions.medrec import ReconciliationResult, reconcile
from fhircare.transitions.medrec_fhir import ID_SYSTEM, build_outputs
from fhircare.transitions.reconcile_cli import render_table, run_reconcile

RX = "http://www.nlm.nih.gov/research/umls/rxnorm"
SCT = "http://snomed.info/sct"
CAT = "http://terminology.hl7.org/CodeSystem/medicationrequest-category"
PAT = "Patient/p1"
ADMIT, DISCHARGE = "2024-03-01T10:00:00+00:00", "2024-03-05T12:00:00+00:00"
ENC: dict[str, Any] = {
    "resourceType": "Encounter",
    "id": "enc1",
    "status": "finished",
    "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
    "subject": {"reference": PAT},
    "period": {"start": ADMIT, "end": DISCHARGE},
}
ROUTES = {"oral": "26643006", "iv": "47625008", "sc": "34206005"}


def sig(
    dose: float | None = None,
    unit: str = "mg",
    *,
    code: str | None = None,
    freq: int | None = None,
    route: str | None = "oral",
    text: str | None = None,
    prn: bool = False,
) -> dict[str, Any]:
    d: dict[str, Any] = {}
    if text:
        d["text"] = text
    if dose is not None:
        d["doseAndRate"] = [{"doseQuantity": {"value": dose, "unit": unit}}]
    if code:
        d["timing"] = {"code": {"coding": [{"code": code}]}}
    elif freq:
        d["timing"] = {"repeat": {"frequency": freq, "period": 1, "periodUnit": "d"}}
    if route:
        d["route"] = {"coding": [{"system": SCT, "code": ROUTES[route]}]}
    if prn:
        d["asNeededBoolean"] = True
    return d


def cc(text: str, rxcui: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"text": text}
    if rxcui:
        out["coding"] = [{"system": RX, "code": rxcui, "display": text}]
    return out


def ms(rid: str, drug: str, dosage: dict | None = None, **kw: Any) -> dict[str, Any]:
    r = {
        "resourceType": "MedicationStatement",
        "id": rid,
        "status": kw.pop("status", "active"),
        "medicationCodeableConcept": kw.pop("concept", None) or cc(drug),
        "subject": {"reference": PAT},
    }
    if dosage is not None:
        r["dosage"] = [dosage]
    r.update(kw)
    return r


def mr(
    rid: str,
    drug: str,
    dosage: dict | None = None,
    *,
    category: str | None = "discharge",
    authored: str = "2024-03-05T11:00:00+00:00",
    **kw: Any,
) -> dict[str, Any]:
    r: dict[str, Any] = {
        "resourceType": "MedicationRequest",
        "id": rid,
        "status": kw.pop("status", "active"),
        "intent": "order",
        "subject": {"reference": PAT},
        "authoredOn": authored,
    }
    if "medicationReference" not in kw and "concept" not in kw:
        r["medicationCodeableConcept"] = cc(drug)
    if "concept" in kw:
        r["medicationCodeableConcept"] = kw.pop("concept")
    if category:
        r["category"] = [{"coding": [{"system": CAT, "code": category}]}]
    if dosage is not None:
        r["dosageInstruction"] = [dosage]
    r.update(kw)
    return r


def run(*resources: dict[str, Any], **kw: Any) -> ReconciliationResult:
    return reconcile(list(resources), ENC, **kw)


def item(result: ReconciliationResult, ingredient: str, status: str | None = None):
    hits = [
        i
        for i in result.items
        if i.ingredient == ingredient and (status is None or i.status == status)
    ]
    assert len(hits) == 1, (ingredient, [i.to_json() for i in result.items])
    return hits[0]


def issues(result: ReconciliationResult, kind: str) -> list:
    return [i for i in result.issues if i.type == kind]


# --------------------------------------------------------------------------- identification


def test_brand_vs_generic_is_continued() -> None:
    res = run(
        ms("pre", "Lasix 40 MG Oral Tablet", sig(1, "tablet", code="QD")),
        mr("post", "Furosemide 40 MG Oral Tablet", sig(40, "mg", freq=1)),
    )
    it = item(res, "furosemide")
    assert (it.status, it.changes, it.rxnorm) == ("continued", [], ["4603"])
    assert (it.before, it.after) == ("MedicationStatement/pre", "MedicationRequest/post")
    assert res.issues == []


def test_combination_brand_matches_by_ingredient_set() -> None:
    res = run(
        ms("pre", "Norco 5/325", sig(1, "tablet", code="Q6H", prn=True)),
        mr(
            "post",
            "Acetaminophen 325 MG / HYDROcodone Bitartrate 5 MG Oral Tablet",
            sig(1, "tablet", text="every 6 hours as needed"),
        ),
    )
    it = item(res, "hydrocodone / acetaminophen")
    assert it.status == "continued"
    assert it.rxnorm == ["5489", "161"]


def test_combination_vs_single_ingredient_is_not_the_same_drug() -> None:
    res = run(
        ms("pre", "hydrocodone/APAP 5-325 mg tab", sig(1, "tablet", code="Q6H")),
        mr("post", "Acetaminophen 500 MG Oral Tablet", sig(1, "tablet", code="Q6H")),
    )
    assert item(res, "hydrocodone / acetaminophen").status == "discontinued"
    assert item(res, "acetaminophen").status == "new"


def test_rxnorm_product_code_beats_misspelled_display() -> None:
    ident = identify_concept(cc("Simvistatin 10 MG", "316672"))
    assert ident.ingredients == ("simvastatin",)
    assert ident.strength == (("simvastatin", 10.0, "mg"),)


def test_unknown_drug_is_unmatched_never_guessed() -> None:
    res = run(
        ms("a", "Herbal supplement X", sig(1, "tablet", code="QD")),
        ms("b", "Simvistatin 10 MG", sig(1, "tablet", code="QD")),
        mr("c", "Herbal supplement Y", sig(1, "tablet", code="QD")),
        mr("d", "Simvastatin 10 MG Oral Tablet", sig(1, "tablet", code="QD")),
    )
    # nothing is paired by similar spelling: each unknown side stands alone
    assert [i.status for i in res.items] == ["discontinued", "discontinued", "new", "new"]
    unmatched = issues(res, "unmatched")
    assert sorted(i.items[0] for i in unmatched) == [0, 1, 2]
    assert item(res, "simvastatin").status == "new"


def test_same_unknown_text_pairs_but_stays_flagged() -> None:
    res = run(
        ms("a", "Herbal supplement X", sig(1, "tablet", code="QD")),
        mr("b", "herbal  supplement x", sig(1, "tablet", code="QD")),
    )
    assert [i.status for i in res.items] == ["continued"]
    assert [i.type for i in res.issues] == ["unmatched"]


def test_contained_and_referenced_medication() -> None:
    contained = {
        "resourceType": "Medication",
        "id": "med1",
        "code": {"coding": [{"system": RX, "code": "314076"}]},
    }
    pre = ms("pre", "", sig(1, "tablet", code="QD"))
    del pre["medicationCodeableConcept"]
    pre["contained"] = [contained]
    pre["medicationReference"] = {"reference": "#med1"}
    post = mr(
        "post", "", sig(10, "mg", code="QD"), medicationReference={"reference": "Medication/m9"}
    )
    external = {
        "resourceType": "Medication",
        "id": "m9",
        "code": {"text": "Zestril"},
        "form": {"text": "Oral Tablet"},
        "ingredient": [],
    }
    res = run(pre, post, resolve={"Medication/m9": external}.get)
    it = item(res, "lisinopril")
    assert (it.status, it.rxnorm) == ("continued", ["29046"])
    assert res.issues == []
    # the same reference without a resolver: unresolved, flagged, not matched
    res2 = run(pre, post)
    assert item(res2, "lisinopril").status == "discontinued"
    (unmatched,) = issues(res2, "unmatched")
    assert "could not be resolved" in unmatched.detail


def test_medication_in_bundle_resolved_by_full_url() -> None:
    med = {"resourceType": "Medication", "code": cc("Warfarin Sodium 5 MG Oral Tablet", "855332")}
    post = mr("post", "", sig(5, "mg", code="QD"), medicationReference={"reference": "urn:uuid:1"})
    res = run({"fullUrl": "urn:uuid:1", "resource": med}, post)
    assert item(res, "warfarin", "new").rxnorm == ["11289"]


# --------------------------------------------------------------------------- dosage parsing


@pytest.mark.parametrize(
    ("dosage", "per_day"),
    [
        ({"text": "1 tab po twice daily"}, 2.0),
        ({"timing": {"code": {"coding": [{"code": "BID"}]}}}, 2.0),
        ({"text": "every 12 hours"}, 2.0),
        ({"text": "q8h"}, 3.0),
        ({"text": "three times a day"}, 3.0),
        ({"timing": {"repeat": {"frequency": 1, "period": 8, "periodUnit": "h"}}}, 3.0),
        ({"text": "every other day"}, 0.5),
        ({"text": "once weekly"}, 1 / 7),
    ],
)
def test_frequency_forms_are_equivalent(dosage: dict, per_day: float) -> None:
    assert parse_dosage([dosage]).per_day == pytest.approx(per_day, rel=1e-3)


def test_text_sig_gives_dose_route_prn() -> None:
    s = parse_dosage([{"text": "Take 2 tablets by mouth every 6 hours as needed for pain"}])
    assert (s.dose.value, s.dose.unit, s.route, s.prn) == (2.0, "count", "oral", True)


def test_units_normalised_1000_mg_is_1_g() -> None:
    res = run(
        ms("pre", "Acetaminophen 500 MG Oral Tablet", sig(2, "tablet", code="TID")),
        mr("post", "acetaminophen 500 mg tab", sig(1, "g", code="TID")),
    )
    assert item(res, "acetaminophen").status == "continued"


# --------------------------------------------------------------------------- changes


def test_dose_change() -> None:
    res = run(
        ms("pre", "Lisinopril 10 MG Oral Tablet", sig(1, "tablet", code="QD")),
        mr("post", "Lisinopril 10 MG Oral Tablet", sig(2, "tablet", code="QD")),
    )
    it = item(res, "lisinopril")
    assert (it.status, it.changes) == ("changed", ["dose"])
    assert it.notes == ["dose 10 mg -> 20 mg"]


def test_strength_change_same_dose_vs_new_dose() -> None:
    same_dose = run(
        ms("pre", "Lisinopril 10 MG Oral Tablet", sig(2, "tablet", code="QD")),
        mr("post", "Lisinopril 20 MG Oral Tablet", sig(1, "tablet", code="QD")),
    )
    assert item(same_dose, "lisinopril").changes == ["strength"]
    new_dose = run(
        ms("pre", "Lisinopril 10 MG Oral Tablet", sig(1, "tablet", code="QD")),
        mr("post", "Lisinopril 20 MG Oral Tablet", sig(1, "tablet", code="QD")),
    )
    assert item(new_dose, "lisinopril").changes == ["strength", "dose"]


def test_frequency_change_and_text_timing_equivalence() -> None:
    changed = run(
        ms("pre", "Metformin 500 MG Oral Tablet", sig(1, "tablet", code="BID")),
        mr("post", "Metformin 500 MG Oral Tablet", sig(1, "tablet", code="TID")),
    )
    assert item(changed, "metformin").changes == ["frequency"]
    same = run(
        ms("pre", "Metformin 500 MG Oral Tablet", sig(1, "tablet", text="twice daily")),
        mr("post", "Metformin 500 MG Oral Tablet", sig(1, "tablet", code="BID")),
    )
    assert item(same, "metformin").status == "continued"


def test_prn_to_scheduled_is_a_frequency_change() -> None:
    res = run(
        ms("pre", "Ibuprofen 200 MG Oral Tablet", sig(1, "tablet", code="TID", prn=True)),
        mr("post", "Ibuprofen 200 MG Oral Tablet", sig(1, "tablet", code="TID")),
    )
    assert item(res, "ibuprofen").changes == ["frequency"]


def test_route_change_po_to_iv() -> None:
    res = run(
        ms("pre", "Furosemide 40 MG Oral Tablet", sig(1, "tablet", code="QD")),
        mr(
            "post", "Furosemide 10 MG/ML Injectable Solution", sig(40, "mg", code="BID", route="iv")
        ),
    )
    it = item(res, "furosemide")
    assert it.status == "changed"
    assert {"route", "form", "frequency"} <= set(it.changes)
    assert "dose" not in it.changes  # 1 x 40 mg tablet == 40 mg


def test_form_change_ir_to_er() -> None:
    res = run(
        ms("pre", "Metformin 500 MG Oral Tablet", sig(1, "tablet", code="QD")),
        mr(
            "post",
            "24 HR Metformin hydrochloride 500 MG Extended Release Oral Tablet",
            sig(1, "tablet", code="QD"),
        ),
    )
    assert item(res, "metformin").changes == ["form"]


def test_salts_metoprolol_succinate_er_vs_tartrate_ir_not_continued() -> None:
    res = run(
        ms("pre", "metoprolol succinate ER 50 mg", sig(1, "tablet", code="QD")),
        mr("post", "Metoprolol Tartrate 50 MG Oral Tablet", sig(1, "tablet", code="QD")),
    )
    it = item(res, "metoprolol")
    assert it.status == "changed"
    assert {"form", "salt"} <= set(it.changes)
    assert it.rxnorm == ["6918"]


def test_missing_dosage_on_one_side_is_flagged_not_silently_continued() -> None:
    res = run(
        ms("pre", "Atorvastatin 40 MG Oral Tablet"),
        mr("post", "Atorvastatin 40 MG Oral Tablet", sig(1, "tablet", code="QD")),
    )
    it = item(res, "atorvastatin")
    assert it.status == "continued"
    (issue,) = issues(res, "unverifiable")
    assert issue.items == [res.items.index(it)]
    assert "dose" in issue.detail and "frequency" in issue.detail


# ------------------------------------------------------------------ held / stopped / omitted


def test_held_stopped_with_reason_and_silently_missing() -> None:
    res = run(
        ms("p1", "Lisinopril 10 MG Oral Tablet", sig(1, "tablet", code="QD")),
        ms("p2", "Atorvastatin 40 MG Oral Tablet", sig(1, "tablet", code="QD")),
        ms("p3", "Amlodipine 5 MG Oral Tablet", sig(1, "tablet", code="QD")),
        ms("p4", "Warfarin Sodium 5 MG Oral Tablet", sig(1, "tablet", code="QD")),
        mr("a1", "Lisinopril 10 MG Oral Tablet", sig(1, "tablet", code="QD"), status="on-hold"),
        mr(
            "a2",
            "Atorvastatin 40 MG Oral Tablet",
            status="stopped",
            statusReason={"text": "myalgia"},
        ),
    )
    held = item(res, "lisinopril")
    assert (held.status, held.changes) == ("changed", ["held"])
    stopped = item(res, "atorvastatin")
    assert (stopped.status, stopped.stop_reason) == ("discontinued", "myalgia")
    omitted = {res.items[i.items[0]].ingredient: i.severity for i in issues(res, "omission")}
    assert omitted == {"amlodipine": "moderate", "warfarin": "high"}


def test_stop_without_reason_is_low_omission() -> None:
    res = run(
        ms("p1", "Amlodipine 5 MG Oral Tablet", sig(1, "tablet", code="QD")),
        mr("a1", "Amlodipine 5 MG Oral Tablet", status="stopped"),
    )
    (issue,) = issues(res, "omission")
    assert issue.severity == "low"


def test_non_chronic_missing_is_not_an_omission() -> None:
    res = run(ms("p1", "Ibuprofen 200 MG Oral Tablet", sig(1, "tablet", code="TID", prn=True)))
    assert item(res, "ibuprofen").status == "discontinued"
    assert issues(res, "omission") == []


def test_entered_in_error_is_ignored() -> None:
    res = run(
        ms("p1", "Lisinopril 10 MG Oral Tablet", sig(1, "tablet", code="QD")),
        mr("bad", "Lisinopril 20 MG Oral Tablet", sig(1, "tablet"), status="entered-in-error"),
        mr("a1", "Lisinopril 10 MG Oral Tablet", sig(1, "tablet", code="QD")),
    )
    assert [(i.status, i.after) for i in res.items] == [("continued", "MedicationRequest/a1")]


# --------------------------------------------------------------------------- duplicates / high risk


def test_duplicate_same_ingredient_in_combination() -> None:
    res = run(
        mr("a1", "Norco 5/325", sig(1, "tablet", code="Q6H", prn=True)),
        mr("a2", "Acetaminophen 500 MG Oral Tablet", sig(2, "tablet", code="QID")),
    )
    (dup,) = issues(res, "duplicate-therapy")
    assert dup.severity == "high" and dup.basis == "same-ingredient"
    assert sorted(dup.items) == [0, 1] and "acetaminophen" in dup.detail


def test_duplicate_same_class_and_ace_plus_arb() -> None:
    two_ace = run(
        mr("a1", "Lisinopril 10 MG Oral Tablet", sig(1, "tablet", code="QD")),
        mr("a2", "Enalapril 5 mg tablet", sig(1, "tablet", code="BID")),
    )
    (dup,) = issues(two_ace, "duplicate-therapy")
    assert (dup.basis, dup.severity, sorted(dup.items)) == ("same-class", "moderate", [0, 1])
    ace_arb = run(
        mr("a1", "Lisinopril 10 MG Oral Tablet", sig(1, "tablet", code="QD")),
        mr("a2", "Losartan 50 mg tablet", sig(1, "tablet", code="QD")),
    )
    (dup2,) = issues(ace_arb, "duplicate-therapy")
    assert dup2.basis == "class-group" and "RAAS" in dup2.detail


def test_unrelated_drugs_are_not_duplicates() -> None:
    res = run(
        mr("a1", "Lisinopril 10 MG Oral Tablet", sig(1, "tablet", code="QD")),
        mr("a2", "Amlodipine 5 MG Oral Tablet", sig(1, "tablet", code="QD")),
    )
    assert issues(res, "duplicate-therapy") == []


def test_high_risk_started_and_changed() -> None:
    started = run(mr("a1", "Warfarin Sodium 5 MG Oral Tablet", sig(1, "tablet", code="QD")))
    (hr,) = issues(started, "high-risk")
    assert (hr.severity, started.items[hr.items[0]].status) == ("high", "new")
    changed = run(
        ms("p1", "Lantus 100 UNT/ML Injectable Solution", sig(20, "U", code="QD", route="sc")),
        mr("a1", "insulin glargine 100 unt/ml pen", sig(30, "U", code="QD", route="sc")),
    )
    it = item(changed, "insulin glargine")
    assert it.changes == ["dose"]
    (hr2,) = issues(changed, "high-risk")
    assert hr2.severity == "high" and "20 unit -> 30 unit" in hr2.detail


def test_high_risk_continued_unchanged_is_quiet() -> None:
    res = run(
        ms("p1", "Warfarin Sodium 5 MG Oral Tablet", sig(1, "tablet", code="QD")),
        mr("a1", "Coumadin 5 mg tablet", sig(5, "mg", code="QD")),
    )
    assert item(res, "warfarin").status == "continued"
    assert res.issues == []


# --------------------------------------------------------------------------- list sources


def _list(code: str, refs: list[str], **kw: Any) -> dict[str, Any]:
    return {
        "resourceType": "List",
        "status": "current",
        "mode": "snapshot",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": PAT},
        "entry": [{"item": {"reference": r}} for r in refs],
        **kw,
    }


def test_lists_10160_0_and_75311_1_define_the_sides() -> None:
    # MedicationRequests without category: only the Lists say which side they are on
    home = mr("h1", "Lisinopril 10 MG Oral Tablet", sig(1, "tablet", code="QD"), category=None)
    home["authoredOn"] = "2024-03-03T00:00:00+00:00"  # inside the stay, still pre (listed)
    home2 = mr("h2", "Furosemide 40 MG Oral Tablet", sig(1, "tablet", code="QD"), category=None)
    dis = mr("d1", "Lisinopril 10 MG Oral Tablet", sig(1, "tablet", code="BID"), category=None)
    res = run(
        home,
        home2,
        dis,
        _list("10160-0", ["MedicationRequest/h1", "MedicationRequest/h2"]),
        _list("75311-1", ["MedicationRequest/d1"], encounter={"reference": "Encounter/enc1"}),
    )
    assert [(i.ingredient, i.status) for i in res.items] == [
        ("lisinopril", "changed"),
        ("furosemide", "discontinued"),
    ]
    assert [i.type for i in res.issues] == ["omission"]


def test_discharge_list_deleted_entry_is_a_recorded_stop() -> None:
    home = ms("h1", "Amlodipine 5 MG Oral Tablet", sig(1, "tablet", code="QD"))
    lst = _list("75311-1", [], mode="changes")
    lst["entry"] = [
        {
            "item": {"reference": "MedicationStatement/h1"},
            "deleted": True,
            "flag": {"text": "low BP"},
        }
    ]
    res = run(home, lst)
    it = item(res, "amlodipine")
    assert (it.status, it.stop_reason) == ("discontinued", "low BP")
    assert issues(res, "omission") == []


def test_timeline_derivation_from_medication_requests() -> None:
    res = run(
        mr(
            "old",
            "Lisinopril 10 MG Oral Tablet",
            sig(1, "tablet", code="QD"),
            category=None,
            authored="2023-06-01T00:00:00+00:00",
        ),
        mr(
            "gone",
            "Simvastatin 20 MG Oral Tablet",
            sig(1, "tablet", code="QD"),
            category=None,
            authored="2020-01-01T00:00:00+00:00",
            status="completed",
        ),
        mr(
            "inpt",
            "Heparin 5000 UNT/ML Injectable Solution",
            sig(5000, "U", code="Q8H", route="sc"),
            category=None,
            authored="2024-03-02T00:00:00+00:00",
            status="completed",
        ),
        mr(
            "disc",
            "Lisinopril 20 MG Oral Tablet",
            sig(1, "tablet", code="QD"),
            category=None,
            authored="2024-03-05T11:30:00+00:00",
        ),
        mr(
            "later",
            "Amlodipine 5 MG Oral Tablet",
            sig(1, "tablet", code="QD"),
            category=None,
            authored="2024-04-01T00:00:00+00:00",
        ),
    )
    assert [(i.ingredient, i.status, i.before, i.after) for i in res.items] == [
        ("lisinopril", "changed", "MedicationRequest/old", "MedicationRequest/disc")
    ]


def test_community_prescription_written_at_discharge_counts_as_discharge() -> None:
    res = run(
        mr(
            "home",
            "Lisinopril 10 MG Oral Tablet",
            sig(1, "tablet", code="QD"),
            category="community",
            authored="2023-01-01T00:00:00+00:00",
        ),
        mr(
            "rx",
            "Lisinopril 10 MG Oral Tablet",
            sig(1, "tablet", code="QD"),
            category="community",
            authored="2024-03-05T11:00:00+00:00",
        ),
    )
    assert [(i.status, i.before, i.after) for i in res.items] == [
        ("continued", "MedicationRequest/home", "MedicationRequest/rx")
    ]


# --------------------------------------------------------------------------- JSON and FHIR output


def _mixed() -> ReconciliationResult:
    return run(
        ms("p1", "Lisinopril 10 MG Oral Tablet", sig(1, "tablet", code="QD")),
        ms("p2", "Warfarin Sodium 5 MG Oral Tablet", sig(1, "tablet", code="QD")),
        ms("p3", "Herbal supplement X"),
        mr("a1", "Lisinopril 20 MG Oral Tablet", sig(1, "tablet", code="QD")),
        mr("a2", "Enalapril 5 mg tablet", sig(1, "tablet", code="BID")),
        mr("a3", "Metformin 500 MG Oral Tablet", sig(1, "tablet", code="BID"), status="on-hold"),
    )


def test_to_json_shape() -> None:
    data = _mixed().to_json()
    assert set(data) == {"encounter", "items", "issues"}
    assert data["encounter"] == "Encounter/enc1"
    for it in data["items"]:
        assert set(it) == {"status", "ingredient", "rxnorm", "before", "after", "changes"}
        assert it["status"] in {"continued", "changed", "new", "discontinued"}
    for iss in data["issues"]:
        assert set(iss) == {"type", "severity", "detail", "items"}
        assert all(0 <= i < len(data["items"]) for i in iss["items"])
    assert {i["type"] for i in data["issues"]} == {
        "duplicate-therapy",
        "omission",
        "unmatched",
    }


def test_build_outputs_validate_and_are_idempotent() -> None:
    res = _mixed()
    outs = build_outputs(res, PAT, "Encounter/enc1", now="2024-03-05T13:00:00Z")
    for _, r in outs:
        get_fhir_model_class(r["resourceType"]).model_validate(r)
        assert "id" not in r
        assert r["identifier"][0]["system"] == ID_SYSTEM
        assert r["identifier"][0]["value"].startswith("enc1/")
    kinds = [r["resourceType"] for _, r in outs]
    assert kinds.count("List") == 1
    assert kinds.count("DetectedIssue") == kinds.count("Task") == len(res.issues)
    assert kinds.count("MedicationStatement") == len(res.items)
    urls = {u for u, _ in outs}
    assert len(urls) == len(outs)
    again = build_outputs(res, PAT, "Encounter/enc1", now="2024-03-06T00:00:00Z")
    assert [u for u, _ in again] == [u for u, _ in outs]

    lst = outs[0][1]
    assert lst["mode"] == "changes"
    deleted = [e for e in lst["entry"] if e.get("deleted")]
    assert [e["item"]["reference"] for e in deleted] == [
        "MedicationStatement/p2",
        "MedicationStatement/p3",
    ]
    by_url = dict(outs)
    for _, r in outs:
        if r["resourceType"] == "Task":
            focus = by_url[r["focus"]["reference"]]
            assert focus["resourceType"] == "DetectedIssue"
            assert r["priority"] == ("urgent" if focus["severity"] == "high" else "routine")
    dup = next(
        r
        for _, r in outs
        if r["resourceType"] == "DetectedIssue"
        and r["severity"] == "moderate"
        and r["code"]["coding"][0]["code"].startswith("DUPTHP")
    )
    assert dup["code"]["coding"][0]["code"] == "DUPTHPCLS"
    statuses = sorted(r["status"] for _, r in outs if r["resourceType"] == "MedicationStatement")
    assert statuses == ["active", "active", "on-hold", "stopped", "stopped"]


def test_build_outputs_empty_result_validates() -> None:
    outs = build_outputs(run(), PAT, "Encounter/enc1", now="2024-03-05T13:00:00Z")
    ((url, lst),) = outs
    get_fhir_model_class("List").model_validate(lst)
    assert "entry" not in lst and lst["emptyReason"]


# --------------------------------------------------------------------------- CLI core


def _bundle(*resources: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"fullUrl": f"urn:uuid:{n}", "resource": r} for n, r in enumerate(resources)],
    }


def test_run_reconcile_picks_latest_finished_inpatient_encounter() -> None:
    patient = {"resourceType": "Patient", "id": "p1"}
    old = {**ENC, "id": "old", "period": {"start": "2020-01-01", "end": "2020-01-03"}}
    amb = {**ENC, "id": "amb", "class": {"code": "AMB"}, "period": {"end": "2025-01-01"}}
    res = run_reconcile(
        _bundle(
            patient,
            old,
            ENC,
            amb,
            ms("p1", "Lisinopril 10 MG Oral Tablet", sig(1, "tablet", code="QD")),
            mr("a1", "Lisinopril 10 MG Oral Tablet", sig(1, "tablet", code="QD")),
        )
    )
    assert res.encounter == "Encounter/enc1"
    assert [i.status for i in res.items] == ["continued"]
    table = render_table(res)
    assert isinstance(table, Table) and table.row_count == 1


@pytest.mark.parametrize(
    ("bundle", "message"),
    [
        ({"resourceType": "Patient"}, "not a FHIR Bundle"),
        ({"resourceType": "Bundle", "entry": []}, "no entries"),
        (_bundle(ENC), "no Patient"),
        (_bundle({"resourceType": "Patient"}, {"resourceType": "Patient"}, ENC), "2 Patients"),
        (_bundle({"resourceType": "Patient", "id": "p1"}), "no finished"),
        ({"resourceType": "Bundle", "entry": [{"fullUrl": "x"}]}, "has no resource"),
    ],
)
def test_run_reconcile_bad_input(bundle: dict, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        run_reconcile(bundle)


# --------------------------------------------------------------------------- reference table


def test_reference_table_is_consistent() -> None:
    t = load_tables()
    rxcuis = [i.rxcui for i in t.ingredients.values() if i.rxcui]
    assert len(rxcuis) == len(set(rxcuis))
    for ing in t.ingredients.values():
        assert set(ing.classes) <= set(t.classes), ing.name
    assert set(t.high_alert) <= set(t.classes)
    for group in t.duplicate_groups:
        assert set(group["classes"]) <= set(t.classes)
    assert t.ingredients["warfarin"].high_alert and not t.ingredients["lisinopril"].high_alert


def test_table_at_80_columns_cuts_no_status_or_reference() -> None:
    """A pipe or a narrow terminal (80 columns) folds long cells: nothing is cut to '…'."""
    from io import StringIO

    from rich.console import Console

    long_id = "a-discharge-medication-request-with-a-long-id"
    res = run_reconcile(
        _bundle(
            {"resourceType": "Patient", "id": "p1"},
            ENC,
            ms("p1", "Lisinopril 10 MG Oral Tablet", sig(1, "tablet", code="QD")),
            mr(long_id, "Metformin 500 MG Oral Tablet", sig(1, "tablet", code="BID")),
        )
    )
    out = StringIO()
    Console(file=out, width=80, color_system=None).print(render_table(res))
    text = out.getvalue()
    assert "…" not in text
    assert "discontinued" in text
    flat = "".join(line.replace("│", "").replace(" ", "") for line in text.splitlines())
    assert long_id.replace("-", "") in flat.replace("-", "")
