"""Hard cases where a reconciliation could wrongly say "continued" with nothing to review.
Each would hurt a patient if it were called unchanged: it must be a change or be flagged."""

from __future__ import annotations

from tests.unit.test_medrec import issues, item, mr, ms, run, sig


def flagged(res, ingredient: str) -> bool:  # noqa: ANN001
    """The item changed, or an issue asks a person to check it."""
    it = item(res, ingredient)
    idx = res.items.index(it)
    return it.status != "continued" or any(idx in i.items for i in res.issues)


def test_half_tablet_in_text_is_not_read_as_two_tablets() -> None:
    res = run(
        ms("pre", "warfarin 5 MG Oral Tablet", {"text": "take 1/2 tablet by mouth daily"}),
        mr("post", "warfarin 5 MG Oral Tablet", {"text": "take 2 tablets by mouth daily"}),
    )
    it = item(res, "warfarin")
    assert it.status == "changed" and "dose" in it.changes
    assert "dose 2.5 mg -> 10 mg" in it.notes
    [risk] = issues(res, "high-risk")
    assert risk.severity == "high"


def test_split_doses_across_several_dosages_are_compared_as_a_whole() -> None:
    pre = ms("pre", "metoprolol tartrate 25 MG Oral Tablet", sig(25, freq=1))
    pre["dosage"].append(sig(50, freq=1, text="50 mg in the evening"))
    res = run(pre, mr("post", "metoprolol tartrate 25 MG Oral Tablet", sig(25, freq=1)))
    it = item(res, "metoprolol")
    assert it.status == "changed" and "dose" in it.changes
    assert "daily total 75 mg -> 25 mg" in it.notes


def test_extended_release_to_unstated_release_is_flagged() -> None:
    res = run(
        ms("pre", "OxyContin 10 MG", sig(10, freq=2)),
        mr("post", "oxycodone 10 MG", sig(10, freq=2)),
    )
    assert flagged(res, "oxycodone")


def test_ranges_and_timing_limits_are_flagged() -> None:
    every_4_to_6 = {
        "timing": {"repeat": {"frequency": 1, "period": 4, "periodMax": 6, "periodUnit": "h"}},
        "doseAndRate": [{"doseQuantity": {"value": 5, "unit": "mg"}}],
    }
    every_4 = sig(5, text=None)
    every_4["timing"] = {"repeat": {"frequency": 1, "period": 4, "periodUnit": "h"}}
    res = run(
        ms("pre", "oxycodone 5 MG Oral Tablet", every_4_to_6),
        mr("post", "oxycodone 5 MG Oral Tablet", every_4),
    )
    assert flagged(res, "oxycodone")

    course = sig(10, freq=1)
    course["timing"]["repeat"]["boundsDuration"] = {"value": 5, "unit": "d"}
    res = run(
        ms("pre", "lisinopril 10 MG Oral Tablet", sig(10, freq=1)),
        mr("post", "lisinopril 10 MG Oral Tablet", course),
    )
    assert flagged(res, "lisinopril")

    weekly = sig(15, freq=1)
    weekly["timing"]["repeat"]["dayOfWeek"] = ["mon"]
    res = run(
        ms("pre", "methotrexate 2.5 MG Oral Tablet", weekly),
        mr("post", "methotrexate 2.5 MG Oral Tablet", sig(15, freq=1)),
    )
    assert flagged(res, "methotrexate")
    assert any(i.severity == "high" for i in res.issues)  # methotrexate is high-alert


def test_dose_range_is_flagged() -> None:
    ranged = {
        "doseAndRate": [
            {"doseRange": {"low": {"value": 5, "unit": "mg"}, "high": {"value": 10, "unit": "mg"}}}
        ],
        "timing": {"repeat": {"frequency": 1, "period": 4, "periodUnit": "h"}},
    }
    fixed = {
        "doseAndRate": [{"doseQuantity": {"value": 10, "unit": "mg"}}],
        "timing": {"repeat": {"frequency": 1, "period": 4, "periodUnit": "h"}},
    }
    res = run(
        ms("pre", "oxycodone 5 MG Oral Tablet", ranged),
        mr("post", "oxycodone 5 MG Oral Tablet", fixed),
    )
    assert flagged(res, "oxycodone")


def test_draft_or_unknown_discharge_orders_need_confirmation() -> None:
    for status in ("draft", "unknown", "completed"):
        res = run(
            ms("pre", "warfarin 5 MG Oral Tablet", sig(5, freq=1)),
            mr("post", "warfarin 5 MG Oral Tablet", sig(5, freq=1), status=status),
        )
        found = [i for i in issues(res, "unverifiable") if status in i.detail]
        assert found and found[0].severity == "high", status


def test_a_dropped_high_alert_acute_medication_is_an_omission() -> None:
    res = run(
        ms("pre-o", "oxycodone 5 MG Oral Tablet", sig(5, freq=4)),
        ms("pre-l", "lisinopril 10 MG Oral Tablet", sig(10, freq=1)),
        mr("post", "lisinopril 10 MG Oral Tablet", sig(10, freq=1)),
    )
    [omission] = issues(res, "omission")
    assert "oxycodone" in omission.detail and omission.severity == "high"


def test_plain_identical_orders_stay_continued_without_issues() -> None:
    res = run(
        ms("pre", "lisinopril 10 MG Oral Tablet", sig(10, freq=1)),
        mr("post", "lisinopril 10 MG Oral Tablet", sig(10, freq=1)),
    )
    assert item(res, "lisinopril").status == "continued"
    assert res.issues == []
