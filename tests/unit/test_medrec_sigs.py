"""Sigs a clinician reads at a glance: tapers, weekday regimens, holds, counts, strengths
without units, unidentified drugs with different sigs, and bleeding-risk combinations."""

from __future__ import annotations

from typing import Any

from fhir.resources.R4B import get_fhir_model_class

from fhircare.transitions.medications import hold_instruction, parse_name, parse_sig_text
from fhircare.transitions.medrec_fhir import ACT_CODE, ISSUE_SYSTEM, build_outputs
from tests.unit.test_medrec import PAT, issues, item, mr, ms, run, sig

WARFARIN = "Warfarin Sodium 5 MG Oral Tablet"


def weekly(days: list[str], dose: float, unit: str = "mg") -> dict[str, Any]:
    return {
        "doseAndRate": [{"doseQuantity": {"value": dose, "unit": unit}}],
        "timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d", "dayOfWeek": days}},
        "route": {"coding": [{"system": "http://snomed.info/sct", "code": "26643006"}]},
    }


def with_dosages(resource: dict[str, Any], *parts: dict[str, Any]) -> dict[str, Any]:
    resource[
        "dosage" if resource["resourceType"] == "MedicationStatement" else "dosageInstruction"
    ] = list(parts)
    return resource


def flagged(res, ingredient: str) -> bool:  # noqa: ANN001
    it = item(res, ingredient)
    idx = res.items.index(it)
    return any(idx in i.items for i in res.issues)


# --------------------------------------------------------------------------- 1. unidentified


def test_unidentified_drug_paired_by_text_still_gets_its_sig_compared() -> None:
    res = run(
        ms("a", "Herbal supplement X", {"text": "10 mg po daily"}),
        mr(
            "b",
            "herbal supplement x",
            {"text": "10 mg po daily x 3 days, then 5 mg po daily x 3 days"},
        ),
    )
    [it] = res.items
    assert it.status == "changed" and it.changes == ["schedule"]
    assert "10 mg/day x 3 days; then 5 mg/day x 3 days" in it.notes[0]
    assert {i.type for i in res.issues} == {"unmatched"}


def test_unidentified_pair_whose_sig_cannot_be_read_is_flagged_unverifiable() -> None:
    res = run(
        ms("a", "Herbal supplement X", {"text": "1 capsule daily"}),
        mr("b", "Herbal supplement X", {"text": "take as directed"}),
    )
    assert {i.type for i in res.issues} == {"unmatched", "unverifiable"}


# --------------------------------------------------------------------------- 2. regimens


def test_warfarin_weekday_regimen_change_is_a_change_with_the_weekly_totals() -> None:
    pre = with_dosages(
        ms("pre", WARFARIN),
        weekly(["mon", "wed", "fri"], 7.5),
        weekly(["tue", "thu", "sat", "sun"], 5),
    )
    post = with_dosages(
        mr("post", WARFARIN),
        weekly(["mon", "fri"], 7.5),
        weekly(["tue", "wed", "thu", "sat", "sun"], 5),
    )
    res = run(pre, post)
    it = item(res, "warfarin")
    assert it.status == "changed" and "dose" in it.changes
    assert "weekly total 42.5 mg -> 40 mg" in it.notes
    [risk] = issues(res, "high-risk")
    assert risk.severity == "high"
    assert not issues(res, "unverifiable")


def test_same_weekday_regimen_written_two_ways_is_continued() -> None:
    text = "take 7.5 mg on Mon, Wed, Fri; 5 mg all other days"
    pre = ms("pre", WARFARIN, {"text": text})
    post = with_dosages(
        mr("post", WARFARIN),
        weekly(["mon", "wed", "fri"], 1.5, "tablet"),
        weekly(["tue", "thu", "sat", "sun"], 1, "tablet"),
    )
    res = run(pre, post)
    assert item(res, "warfarin").status == "continued"
    assert res.issues == []


def test_same_weekly_total_on_other_days_is_a_schedule_change() -> None:
    res = run(
        ms("pre", WARFARIN, {"text": "7.5 mg on mon and thu, 5 mg other days"}),
        mr("post", WARFARIN, {"text": "7.5 mg on tue and fri, 5 mg other days"}),
    )
    it = item(res, "warfarin")
    assert it.changes == ["schedule"] and "same 40 mg a week" in it.notes[0]


def test_regimen_that_says_per_inr_stays_unverifiable() -> None:
    res = run(
        ms("pre", WARFARIN, {"text": "5 mg daily or as directed per INR"}),
        mr("post", WARFARIN, sig(5, freq=1)),
    )
    [issue] = issues(res, "unverifiable")
    assert issue.severity == "high" and item(res, "warfarin").status == "continued"


def test_prednisone_taper_vs_plain_daily_dose() -> None:
    res = run(
        ms("pre", "prednisone 10 MG Oral Tablet", sig(10, freq=1)),
        mr(
            "post",
            "prednisone 10 MG Oral Tablet",
            {"text": "40 mg daily x 3 days, then 20 mg daily x 3 days, then 10 mg daily"},
        ),
    )
    it = item(res, "prednisone")
    assert it.status == "changed" and it.changes == ["schedule"]


def test_weekly_methotrexate_vs_daily_is_a_high_risk_change() -> None:
    weekly_mtx = sig(15, freq=1)
    weekly_mtx["timing"]["repeat"]["dayOfWeek"] = ["mon"]
    res = run(
        ms("pre", "methotrexate 2.5 MG Oral Tablet", weekly_mtx),
        mr("post", "methotrexate 2.5 MG Oral Tablet", sig(15, freq=1)),
    )
    it = item(res, "methotrexate")
    assert "weekly total 15 mg -> 105 mg" in it.notes
    assert issues(res, "high-risk")[0].severity == "high"


# --------------------------------------------------------------------------- 3. holds


def test_hold_in_the_sig_text_of_an_active_discharge_order_is_held() -> None:
    res = run(
        ms("pre", "lisinopril 10 MG Oral Tablet", sig(10, freq=1)),
        mr("post", "lisinopril 10 MG Oral Tablet", sig(10, freq=1, text="HOLD until seen")),
    )
    it = item(res, "lisinopril")
    assert it.status == "changed" and it.changes == ["held"]
    assert it.notes == ["on hold at discharge (sig: 'HOLD until seen')"]
    assert it.after_info.status == "held"


def test_do_not_take_until_is_held_and_resume_taking_is_not() -> None:
    assert hold_instruction("Do not take until your INR is checked on Monday") == "held"
    assert hold_instruction("resume after your cardiology appointment") == "held"
    assert hold_instruction("Resume taking 500 mg twice daily") is None
    assert hold_instruction("hold for 3 days then resume") == "held"


def test_conditional_hold_parameter_is_flagged_not_called_held() -> None:
    res = run(
        ms("pre", "metoprolol tartrate 25 MG Oral Tablet", sig(25, freq=2)),
        mr(
            "post", "metoprolol tartrate 25 MG Oral Tablet", sig(25, freq=2, text="hold if HR < 60")
        ),
    )
    it = item(res, "metoprolol")
    assert it.status == "continued"
    [issue] = issues(res, "unverifiable")
    assert "conditional hold" in issue.detail


def test_held_discharge_drug_silences_no_omission_and_joins_no_interaction() -> None:
    res = run(
        ms("w", WARFARIN, sig(5, freq=1)),
        mr("w2", WARFARIN, sig(5, freq=1, text="hold until INR below 3")),
        mr("a", "aspirin 81 MG Oral Tablet", sig(81, freq=1)),
    )
    assert item(res, "warfarin").changes == ["held"]
    assert not issues(res, "interaction")


# --------------------------------------------------------------------------- 4. no units


def test_strength_without_units_is_never_assumed_to_be_mg() -> None:
    assert parse_name("Advair 250/50").strength == ()
    assert parse_name("Advair 250/50").unitless == "250/50"
    res = run(
        ms("pre", "Advair 250/50", {"text": "1 puff bid", "route": {"text": "inhaled"}}),
        mr(
            "post",
            "fluticasone propionate 0.25 MG/ACTUAT / salmeterol 0.05 MG/ACTUAT Dry Powder Inhaler",
            {"text": "1 puff bid", "route": {"text": "inhaled"}},
        ),
    )
    it = item(res, "fluticasone / salmeterol")
    [issue] = issues(res, "unverifiable")
    assert "strength" in issue.detail
    assert any("not assumed to be mg" in n for n in it.notes)


def test_bare_number_after_a_name_is_unitless_too() -> None:
    res = run(
        ms("pre", "lisinopril 10", sig(1, "tablet", freq=1)),
        mr("post", "Lisinopril 20 MG Oral Tablet", sig(1, "tablet", freq=1)),
    )
    assert issues(res, "unverifiable")


def test_tablet_counts_with_an_unknown_strength_are_not_compared_as_equal() -> None:
    res = run(
        ms("pre", "hydrocodone / acetaminophen tablet", sig(1, "tablet", code="Q6H")),
        mr("post", "Norco 10/325 mg", sig(1, "tablet", code="Q6H")),
    )
    assert flagged(res, "hydrocodone / acetaminophen")


# --------------------------------------------------------------------------- 5. combinations


def test_anticoagulant_with_antiplatelet_is_a_bleeding_risk_interaction() -> None:
    res = run(
        ms("pre", "apixaban 5 MG Oral Tablet", sig(5, freq=2)),
        mr("post", "apixaban 5 MG Oral Tablet", sig(5, freq=2)),
        mr("new", "clopidogrel 75 MG Oral Tablet", sig(75, freq=1)),
    )
    [inter] = issues(res, "interaction")
    assert inter.severity == "high" and "bleeding" in inter.detail
    assert {res.items[i].ingredient for i in inter.items} == {"apixaban", "clopidogrel"}
    outs = build_outputs(res, PAT, "Encounter/enc1", now="2024-03-05T13:00:00Z")
    di = next(
        r
        for _, r in outs
        if r["resourceType"] == "DetectedIssue"
        and any(c["code"] == "interaction" for c in r["code"]["coding"])
    )
    get_fhir_model_class("DetectedIssue").model_validate(di)
    assert di["code"]["coding"][0] == {
        "system": ACT_CODE,
        "code": "DRG",
        "display": "Drug Interaction Alert",
    }
    assert di["code"]["coding"][1]["system"] == ISSUE_SYSTEM
    assert len(di["implicated"]) == 2


def test_anticoagulant_with_nsaid_and_a_continued_pair_is_moderate() -> None:
    res = run(
        ms("w", WARFARIN, sig(5, freq=1)),
        ms("n", "naproxen 500 MG Oral Tablet", sig(500, freq=2)),
        mr("w2", WARFARIN, sig(5, freq=1)),
        mr("n2", "naproxen 500 MG Oral Tablet", sig(500, freq=2)),
    )
    [inter] = issues(res, "interaction")
    assert inter.severity == "moderate" and "NSAID" in inter.detail


def test_opioid_with_benzodiazepine_is_flagged() -> None:
    res = run(
        mr("o", "oxycodone 5 MG Oral Tablet", sig(5, code="Q6H", prn=True)),
        mr("b", "lorazepam 1 MG Oral Tablet", sig(1, freq=2)),
    )
    [inter] = issues(res, "interaction")
    assert "respiratory depression" in inter.detail


# --------------------------------------------------------------------------- 6. precision


def test_tab_counts_words_latin_and_halves_are_exact() -> None:
    for text, count, per_day in (
        ("1 tab po bid", 1.0, 2.0),
        ("i po qhs", 1.0, 1.0),
        ("one-half tablet by mouth daily", 0.5, 1.0),
        ("1 1/2 tablets daily", 1.5, 1.0),
        ("two tablets every morning", 2.0, 1.0),
    ):
        s = parse_sig_text(text)
        assert s.dose is not None and (s.dose.value, s.dose.unit) == (count, "count"), text
        assert s.per_day == per_day and s.complex is None, text


def test_count_sigs_compare_with_mg_sigs_when_the_strength_is_known() -> None:
    res = run(
        ms("a", "amlodipine 10 MG Oral Tablet", {"text": "one-half tablet by mouth daily"}),
        mr("b", "amlodipine 10 MG Oral Tablet", sig(5, freq=1)),
        ms("c", "atorvastatin 40 MG Oral Tablet", {"text": "i po qhs"}),
        mr("d", "atorvastatin 40 MG Oral Tablet", sig(40, code="QD")),
    )
    assert item(res, "amlodipine").status == "continued"
    assert item(res, "atorvastatin").status == "continued"
    assert res.issues == []
