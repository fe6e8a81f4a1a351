"""The reconciliation's fast paths and memos give exactly what the plain computation gives."""

from __future__ import annotations

import copy
import dataclasses
import itertools
from typing import Any

import pytest

from fhircare.transitions import medications
from fhircare.transitions.medications import Dose, Sig, clear_caches, load_tables, parse_dosage
from fhircare.transitions.medrec import reconcile

RX = "http://www.nlm.nih.gov/research/umls/rxnorm"
SCT = "http://snomed.info/sct"
ENC: dict[str, Any] = {
    "resourceType": "Encounter",
    "id": "enc9",
    "status": "finished",
    "class": {"code": "IMP"},
    "period": {"start": "2024-03-01T10:00:00+00:00", "end": "2024-03-05T12:00:00+00:00"},
}


def _dosage(value: Any, unit: str = "mg", code: str = "BID", **extra: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "timing": {"code": {"coding": [{"code": code}]}},
        "doseAndRate": [{"doseQuantity": {"value": value, "unit": unit}}],
        "route": {"coding": [{"system": SCT, "code": "26643006"}]},
    }
    d.update(extra)
    return d


def _inputs() -> list[dict[str, Any]]:
    drugs = [
        ("Lisinopril 10 MG Oral Tablet", "Lisinopril 20 MG Oral Tablet", 1, 1),
        ("Warfarin Sodium 5 MG Oral Tablet", "Coumadin 5 mg tablet", 1, 1),
        ("Norco 5/325", "Acetaminophen 500 MG Oral Tablet", 1, 2),
        ("metoprolol succinate ER 50 mg", "Metoprolol Tartrate 25 MG Oral Tablet", 1, 1),
        ("Some herbal tea", "Apixaban 5 mg tablet", 1, 1),
    ]
    out: list[dict[str, Any]] = []
    for n, (pre, post, dose_pre, dose_post) in enumerate(drugs):
        out.append(
            {
                "resourceType": "MedicationStatement",
                "id": f"h{n}",
                "meta": {"versionId": "1"},
                "status": "active",
                "medicationCodeableConcept": {"text": pre},
                "dosage": [_dosage(dose_pre, "tablet", "QD", text="1 tab po daily")],
            }
        )
        out.append(
            {
                "resourceType": "MedicationRequest",
                "id": f"d{n}",
                "meta": {"versionId": "1"},
                "status": "on-hold" if n == 4 else "active",
                "intent": "order",
                "category": [{"coding": [{"code": "discharge"}]}],
                "medicationCodeableConcept": {
                    "coding": [{"system": RX, "code": "855332", "display": post}]
                }
                if n == 1
                else {"text": post},
                "authoredOn": "2024-03-05T11:00:00+00:00",
                "dosageInstruction": [_dosage(dose_post, "tablet")],
            }
        )
    return out


def _deep(result: Any) -> Any:
    """Everything a caller can see: JSON, notes, issue basis, parsed identities and sigs."""
    return (
        result.to_json(),
        [(i.notes, i.stop_reason, i.stop_recorded) for i in result.items],
        [
            (dataclasses.astuple(x.identity), dataclasses.astuple(x.sig), x.label)
            for i in result.items
            for x in (i.before_info, i.after_info)
            if x is not None
        ],
        [i.basis for i in result.issues],
    )


def test_cold_and_warm_caches_give_the_same_reconciliation() -> None:
    resources = _inputs()
    clear_caches()
    cold = _deep(reconcile(copy.deepcopy(resources), ENC))
    warm = _deep(reconcile(copy.deepcopy(resources), ENC))
    again = _deep(reconcile(resources, ENC))
    assert cold == warm == again
    assert [i["status"] for i in cold[0]["items"]].count("changed") >= 2  # the data do pair


def test_reconcile_does_not_modify_its_input() -> None:
    resources = _inputs()
    before = copy.deepcopy(resources)
    reconcile(resources, ENC)
    assert resources == before


def test_dose_memo_keeps_the_sign_of_zero_and_the_unit_spelling_apart() -> None:
    clear_caches()
    zero = parse_dosage([_dosage(0.0)]).dose
    negative_zero = parse_dosage([_dosage(-0.0)]).dose
    assert zero is not None and negative_zero is not None
    assert (f"{zero.value:g}", f"{negative_zero.value:g}") == ("0", "-0")
    assert parse_dosage([_dosage(2, "g")]).dose == Dose(2000.0, "mg")
    assert parse_dosage([_dosage(2, "G ")]).dose == Dose(2000.0, "mg")
    assert parse_dosage([_dosage(2, "furlongs")]).dose == Dose(2.0, "furlongs")


def test_memoised_doses_match_a_cold_parse() -> None:
    dosages = [[_dosage(v, u)] for v in (1, 1.0, 0.5, 250, 1e-7) for u in ("mg", "mcg", "tab")]
    clear_caches()
    cold = [parse_dosage(d) for d in dosages]
    warm = [parse_dosage(d) for d in dosages]
    assert cold == warm
    assert warm[0].dose == Dose(1.0, "mg") and warm[1].dose == Dose(0.001, "mg")


def test_fast_constructed_sig_is_an_ordinary_frozen_sig() -> None:
    sig = parse_dosage([_dosage(5, "mg", text="5 mg po bid")])
    plain = Sig(dose=Dose(5.0, "mg"), per_day=2.0, prn=False, route="oral", text="5 mg po bid")
    assert sig == plain and hash(sig) == hash(plain) and repr(sig) == repr(plain)
    with pytest.raises(dataclasses.FrozenInstanceError):
        sig.per_day = 3.0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        sig.dose.value = 1.0  # type: ignore[misc,union-attr]


def test_route_fast_path_falls_back_like_the_general_lookup() -> None:
    t = load_tables()
    oral = next(c for c, r in t.routes_snomed.items() if r == "oral")
    unknown_code = {"coding": [{"system": SCT, "code": "0"}], "text": "oral"}
    other_system = {"coding": [{"system": "urn:x", "code": oral}]}
    two_codings = {"coding": [{"system": "urn:x", "code": "1"}, {"system": SCT, "code": oral}]}
    text_route = parse_dosage([{"text": "1 tab po daily"}]).route
    assert text_route == "oral"
    for route in (unknown_code, other_system, two_codings, {"text": "by mouth"}):
        expected = medications._route(route, t) or text_route
        assert parse_dosage([{"route": route, "text": "1 tab po daily"}]).route == expected
    assert parse_dosage([{"route": two_codings}]).route == "oral"
    assert parse_dosage([{"route": other_system}]).route is None


def test_explicit_tables_give_the_same_sig() -> None:
    d = [_dosage(10, "mg", "TID", text="10 mg three times a day prn")]
    assert parse_dosage(d, load_tables()) == parse_dosage(d)


def test_compare_inlines_amount_and_release_of_faithfully() -> None:
    """compare() carries inlined copies of amount() and release_of(): they must agree."""
    from fhircare.transitions.medications import Identity, MedInfo
    from fhircare.transitions.medrec.compare import amount, compare, release_of

    strengths = [(), (("x", 5.0, "mg"),), (("x", 10.0, "mg/ml"),), (("x", 1.0, "unit/ml"),)]
    doses = [Dose(1.0, "count"), Dose(2.0, "ml"), Dose(5.0, "mg"), Dose(0.5, "count")]
    forms = [
        ("tablet", None, "text"),
        ("capsule", "extended", "text"),
        ("tablet", None, "medication"),
    ]
    for sb, sa in itertools.product(strengths, repeat=2):
        for db, da in itertools.product(doses, repeat=2):
            for (fb, rb, src_b), (fa, ra, src_a) in itertools.product(forms, repeat=2):
                ib = Identity(("x",), sb, fb, rb, source=src_b)
                ia = Identity(("x",), sa, fa, ra, source=src_a)
                b = MedInfo(
                    "b", "MedicationStatement", "active", ib, Sig(db, 1.0, False, "oral"), "x"
                )
                a = MedInfo(
                    "a", "MedicationRequest", "active", ia, Sig(da, 1.0, False, "oral"), "x"
                )
                changes, notes, missing = compare(b, a)
                ub, vb = amount(db, sb)
                ua, va = amount(da, sa)
                if ub != ua:
                    assert "dose" in missing
                elif abs(va - vb) > 1e-6 * max(abs(va), abs(vb), 1.0):
                    assert f"dose {vb:g} {ub} -> {va:g} {ua}" in notes
                else:
                    assert "dose" not in changes and "dose" not in missing
                relb, rela = release_of(ib), release_of(ia)
                if (
                    relb
                    and rela
                    and relb != rela
                    and fb == fa
                    and [u for *_, u in sb] == [u for *_, u in sa]
                ):
                    assert f"release {relb} -> {rela}" in notes
