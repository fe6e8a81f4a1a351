"""Search semantics on the embedded store: every parameter type, modifiers, prefixes,
chains, _has, _list, sorting, custom SearchParameters and referential integrity."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fhircare.fhir.errors import BadRequest, Conflict
from fhircare.store.base import WriteOp
from fhircare.store.embedded import EmbeddedStore


def put(store: EmbeddedStore, *resources: dict[str, Any]) -> None:
    store.commit([WriteOp("update", r["resourceType"], id=r["id"], resource=r) for r in resources])


def ids(store: EmbeddedStore, rtype: str, params: list[tuple[str, str]]) -> list[str]:
    return sorted(r["id"] for r in store.search(rtype, params))


@pytest.fixture
def data(tmp_path: Path) -> EmbeddedStore:
    s = EmbeddedStore(tmp_path / "s", fsync=False)
    put(
        s,
        {"resourceType": "Organization", "id": "org", "name": "Acme Health"},
        {"resourceType": "Practitioner", "id": "doc", "name": [{"family": "Welby"}]},
        {
            "resourceType": "Patient",
            "id": "ann",
            "name": [{"family": "Smith", "given": ["Ann"]}],
            "gender": "female",
            "birthDate": "1950-03-04",
            "managingOrganization": {"reference": "Organization/org"},
            "generalPractitioner": [{"reference": "Practitioner/doc"}],
            "identifier": [
                {
                    "system": "urn:mrn",
                    "value": "123",
                    "type": {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                "code": "MR",
                            }
                        ]
                    },
                }
            ],
            "telecom": [{"system": "email", "value": "ann@example.org"}],
        },
        {
            "resourceType": "Patient",
            "id": "bob",
            "name": [{"family": "Ségal", "given": ["Bob"]}],
            "gender": "male",
            "birthDate": "1980",
        },
    )
    for i, (pid, value, code, when) in enumerate(
        [
            ("ann", 120, "8480-6", "2021-01-15T10:00:00Z"),
            ("ann", 80, "8462-4", "2021-02-15T10:00:00Z"),
            ("bob", 140, "8480-6", "2021-03-15"),
        ]
    ):
        put(
            s,
            {
                "resourceType": "Observation",
                "id": f"o{i}",
                "status": "final",
                "code": {
                    "coding": [{"system": "http://loinc.org", "code": code}],
                    "text": "Blood pressure",
                },
                "subject": {"reference": f"Patient/{pid}"},
                "effectiveDateTime": when,
                "valueQuantity": {
                    "value": value,
                    "unit": "mmHg",
                    "system": "http://unitsofmeasure.org",
                    "code": "mm[Hg]",
                },
                "performer": [{"reference": "Practitioner/doc"}],
            },
        )
    yield s
    s.close()


def test_string_is_prefix_case_and_accent_insensitive(data: EmbeddedStore) -> None:
    assert ids(data, "Patient", [("name", "smi")]) == ["ann"]
    assert ids(data, "Patient", [("family", "segal")]) == ["bob"]
    assert ids(data, "Patient", [("name:exact", "Smith")]) == ["ann"]
    assert ids(data, "Patient", [("name:exact", "smith")]) == []
    assert ids(data, "Patient", [("family:contains", "ega")]) == ["bob"]
    assert ids(data, "Patient", [("name", "smi,seg")]) == ["ann", "bob"]


def test_token_forms_and_modifiers(data: EmbeddedStore) -> None:
    assert ids(data, "Observation", [("code", "http://loinc.org|8480-6")]) == ["o0", "o2"]
    assert ids(data, "Observation", [("code", "http://snomed.info/sct|8480-6")]) == []
    assert ids(data, "Observation", [("code", "|8480-6")]) == []
    assert ids(data, "Observation", [("code", "http://loinc.org|")]) == ["o0", "o1", "o2"]
    assert ids(data, "Observation", [("code:not", "8480-6")]) == ["o1"]
    assert ids(data, "Observation", [("code:text", "blood")]) == ["o0", "o1", "o2"]
    # codes are indexed with the system of their required binding, as HAPI does
    assert ids(data, "Patient", [("gender", "http://hl7.org/fhir/administrative-gender|male")]) == [
        "bob"
    ]
    of_type = "http://terminology.hl7.org/CodeSystem/v2-0203|MR|123"
    assert ids(data, "Patient", [("identifier:of-type", of_type)]) == ["ann"]
    assert ids(data, "Patient", [("email", "ann@example.org")]) == ["ann"]
    assert ids(data, "Patient", [("phone", "ann@example.org")]) == []


def test_missing(data: EmbeddedStore) -> None:
    assert ids(data, "Patient", [("organization:missing", "true")]) == ["bob"]
    assert ids(data, "Patient", [("organization:missing", "false")]) == ["ann"]
    assert ids(data, "Patient", [("identifier:missing", "true")]) == ["bob"]


def test_dates_follow_the_precision_rules(data: EmbeddedStore) -> None:
    assert ids(data, "Patient", [("birthdate", "1950")]) == ["ann"]
    assert ids(data, "Patient", [("birthdate", "1950-03")]) == ["ann"]
    assert ids(data, "Patient", [("birthdate", "1950-03-05")]) == []
    # 1980 (a whole year) is not contained in 1980-06, and overlaps it
    assert ids(data, "Patient", [("birthdate", "1980-06")]) == []
    assert ids(data, "Patient", [("birthdate", "ap1980-06")]) == ["bob"]
    assert ids(data, "Patient", [("birthdate", "ne1950-03-04")]) == ["bob"]
    assert ids(data, "Patient", [("birthdate", "gt1960")]) == ["bob"]
    assert ids(data, "Patient", [("birthdate", "lt1960")]) == ["ann"]
    assert ids(data, "Patient", [("birthdate", "ge1950-03-04")]) == ["ann", "bob"]
    assert ids(data, "Patient", [("birthdate", "le1950-03-04")]) == ["ann"]
    assert ids(data, "Patient", [("birthdate", "sa1950-03-04")]) == ["bob"]
    assert ids(data, "Patient", [("birthdate", "eb1980")]) == ["ann"]
    both = [("date", "ge2021-01-15"), ("date", "lt2021-03")]
    assert ids(data, "Observation", both) == ["o0", "o1"]
    assert ids(data, "Observation", [("date", "2021-01-15T10:00:00Z")]) == ["o0"]
    assert ids(data, "Observation", [("date", "2021-01-15T11:00:00+01:00")]) == ["o0"]


@pytest.mark.parametrize(
    ("rtype", "param", "symbol", "prefix", "value"),
    [
        ("Patient", "birthdate", ">", "gt", "1960"),
        ("Patient", "birthdate", "<", "lt", "1960"),
        ("Patient", "birthdate", ">=", "ge", "1950-03-04"),
        ("Patient", "birthdate", "<=", "le", "1950-03-04"),
        ("Observation", "value-quantity", ">", "gt", "100"),
        ("Observation", "value-quantity", "<=", "le", "120"),
    ],
)
def test_dstu1_comparators_mean_the_r4_prefixes(
    data: EmbeddedStore, rtype: str, param: str, symbol: str, prefix: str, value: str
) -> None:
    """client-py writes `$gt` as `birthdate=>1960`; it finds what `gt1960` finds."""
    expected = ids(data, rtype, [(param, prefix + value)])
    assert expected
    assert ids(data, rtype, [(param, symbol + value)]) == expected


def test_quantities_and_numbers(data: EmbeddedStore) -> None:
    assert ids(data, "Observation", [("value-quantity", "gt100")]) == ["o0", "o2"]
    assert ids(data, "Observation", [("value-quantity", "120")]) == ["o0"]
    assert ids(data, "Observation", [("value-quantity", "1.2e2")]) == ["o0"]
    assert ids(data, "Observation", [("value-quantity", "120||mm[Hg]")]) == ["o0"]
    assert ids(data, "Observation", [("value-quantity", "120||mg")]) == []
    assert ids(data, "Observation", [("value-quantity", "ap130")]) == ["o0", "o2"]
    unit = "120|http://unitsofmeasure.org|mm[Hg]"
    assert ids(data, "Observation", [("value-quantity", unit)]) == ["o0"]


def test_composite_matches_on_one_value(data: EmbeddedStore) -> None:
    both = "http://loinc.org|8480-6$gt130"
    assert ids(data, "Observation", [("code-value-quantity", both)]) == ["o2"]
    assert (
        ids(data, "Observation", [("code-value-quantity", "http://loinc.org|8462-4$gt100")]) == []
    )


def test_references_in_every_form(data: EmbeddedStore) -> None:
    assert ids(data, "Observation", [("subject", "Patient/ann")]) == ["o0", "o1"]
    assert ids(data, "Observation", [("subject", "ann")]) == ["o0", "o1"]
    assert ids(data, "Observation", [("subject:Patient", "ann")]) == ["o0", "o1"]
    assert ids(data, "Observation", [("subject:Group", "ann")]) == []
    assert ids(data, "Observation", [("patient", "Patient/bob,Patient/ann")]) == ["o0", "o1", "o2"]
    assert ids(data, "Observation", [("subject", "Patient/ann/_history/1")]) == ["o0", "o1"]


def test_chains_typed_untyped_and_deep(data: EmbeddedStore) -> None:
    assert ids(data, "Observation", [("subject:Patient.name", "smith")]) == ["o0", "o1"]
    assert ids(data, "Observation", [("patient.name", "segal")]) == ["o2"]
    deep = [("patient.organization.name", "acme")]
    assert ids(data, "Observation", deep) == ["o0", "o1"]
    with pytest.raises(BadRequest, match="ambiguous"):
        data.search("Observation", [("subject.name", "smith")])
    with pytest.raises(BadRequest, match="only reference parameters"):
        data.search("Observation", [("code.name", "x")])


def test_reverse_chains(data: EmbeddedStore) -> None:
    assert ids(data, "Patient", [("_has:Observation:patient:code", "8462-4")]) == ["ann"]
    assert ids(data, "Patient", [("_has:Observation:patient:code", "8480-6")]) == ["ann", "bob"]
    has_doc = [("_has:Patient:general-practitioner:name", "smith")]
    assert ids(data, "Practitioner", has_doc) == ["doc"]
    nested = [("_has:Patient:general-practitioner:_has:Observation:patient:code", "8462-4")]
    assert ids(data, "Practitioner", nested) == ["doc"]
    nested = [("_has:Patient:general-practitioner:_has:Observation:patient:code", "nope")]
    assert ids(data, "Practitioner", nested) == []
    with pytest.raises(BadRequest, match="cannot point at Observation"):
        data.search("Observation", [("_has:Observation:patient:code", "1")])


def test_list(data: EmbeddedStore) -> None:
    put(
        data,
        {
            "resourceType": "List",
            "id": "l1",
            "status": "current",
            "mode": "working",
            "entry": [{"item": {"reference": "Patient/bob"}}],
        },
    )
    assert ids(data, "Patient", [("_list", "l1")]) == ["bob"]
    assert ids(data, "Patient", [("_list", "nope")]) == []
    with pytest.raises(BadRequest, match="functional lists"):
        data.search("Patient", [("_list", "$current-allergies")])


def test_multi_key_sort(data: EmbeddedStore) -> None:
    order = [r["id"] for r in data.search("Observation", [("_sort", "patient,-date")])]
    assert order == ["o1", "o0", "o2"]
    order = [r["id"] for r in data.search("Observation", [("_sort", "-value-quantity")])]
    assert order == ["o2", "o0", "o1"]
    with pytest.raises(BadRequest, match="Unknown sort parameter"):
        data.search("Observation", [("_sort", "nope")])


def test_refusals_name_what_is_wrong(data: EmbeddedStore) -> None:
    with pytest.raises(BadRequest, match="Valid search parameters for this search are"):
        data.search("Patient", [("nope", "1")])
    with pytest.raises(BadRequest, match="not supported"):
        data.search("Location", [("near", "1|2|3|km")])
    with pytest.raises(BadRequest, match="not supported"):
        data.search("Observation", [("code:in", "http://example.org/vs")])
    with pytest.raises(BadRequest, match="Unknown modifier"):
        data.search("Patient", [("name:fuzzy", "x")])
    with pytest.raises(BadRequest, match="Invalid date"):
        data.search("Patient", [("birthdate", "yesterday")])


def test_custom_search_parameter_indexes_existing_resources(data: EmbeddedStore) -> None:
    put(
        data,
        {
            "resourceType": "Patient",
            "id": "eve",
            "extension": [{"url": "http://example.org/eye", "valueCode": "blue"}],
        },
    )
    sp = {
        "resourceType": "SearchParameter",
        "id": "eye",
        "url": "http://example.org/SearchParameter/eye",
        "name": "eye",
        "status": "active",
        "description": "Eye colour",
        "code": "eye-colour",
        "base": ["Patient"],
        "type": "token",
        "expression": "Patient.extension('http://example.org/eye').value",
    }
    with pytest.raises(BadRequest):
        data.search("Patient", [("eye-colour", "blue")])
    put(data, sp)
    assert ids(data, "Patient", [("eye-colour", "blue")]) == ["eve"]
    assert data.candidates  # the term index answers it
    data.commit([WriteOp("delete", "SearchParameter", id="eye")])
    with pytest.raises(BadRequest):
        data.search("Patient", [("eye-colour", "blue")])


def test_custom_search_parameters_survive_a_restart(tmp_path: Path) -> None:
    s = EmbeddedStore(tmp_path / "s", fsync=False)
    put(
        s,
        {
            "resourceType": "SearchParameter",
            "id": "nick",
            "url": "http://example.org/SearchParameter/nick",
            "name": "nick",
            "status": "active",
            "description": "A nickname",
            "code": "nick",
            "base": ["Patient"],
            "type": "string",
            "expression": "Patient.name.where(use='nickname').given",
        },
        {"resourceType": "Patient", "id": "p", "name": [{"use": "nickname", "given": ["Bo"]}]},
    )
    s.close()
    s = EmbeddedStore(tmp_path / "s", fsync=False)
    assert ids(s, "Patient", [("nick", "bo")]) == ["p"]
    s.close()


def test_delete_of_a_referenced_resource_is_refused(data: EmbeddedStore) -> None:
    with pytest.raises(Conflict, match="Observation/o0, Observation/o1"):
        data.commit([WriteOp("delete", "Patient", id="ann")])
    assert data.exists("Patient", "ann")
    # deleting the referrers in the same commit is fine (one atomic transaction)
    data.commit(
        [
            WriteOp("delete", "Observation", id="o0"),
            WriteOp("delete", "Observation", id="o1"),
            WriteOp("delete", "Patient", id="ann"),
        ]
    )
    assert not data.exists("Patient", "ann")


def test_cascade_deletes_what_references_it(data: EmbeddedStore) -> None:
    data.commit([WriteOp("delete", "Practitioner", id="doc", cascade=True)])
    # the practitioner, the observations naming it, and the patient naming it; and
    # through them nothing else remains pointing at a deleted resource
    assert not data.exists("Practitioner", "doc")
    assert not data.exists("Observation", "o0")
    assert not data.exists("Patient", "ann")
    assert data.exists("Organization", "org")


def test_update_dropping_the_reference_allows_the_delete(data: EmbeddedStore) -> None:
    o2 = data.read("Observation", "o2")
    o2["subject"] = {"reference": "Patient/ann"}
    data.commit(
        [
            WriteOp("update", "Observation", id="o2", resource=o2),
            WriteOp("delete", "Patient", id="bob"),
        ]
    )
    assert not data.exists("Patient", "bob")


def test_integrity_can_be_switched_off(tmp_path: Path) -> None:
    s = EmbeddedStore(tmp_path / "s", fsync=False, referential_integrity=False)
    put(
        s,
        {"resourceType": "Patient", "id": "p"},
        {
            "resourceType": "Flag",
            "id": "f",
            "status": "active",
            "code": {"text": "x"},
            "subject": {"reference": "Patient/p"},
        },
    )
    s.commit([WriteOp("delete", "Patient", id="p")])
    assert not s.exists("Patient", "p")
    s.close()


def test_token_search_uses_the_index(data: EmbeddedStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """A token search reads only the candidates the index gives, not the whole type."""
    seen: list[str] = []
    original = data.body

    def spy(rtype: str, rid: str) -> dict[str, Any] | None:
        seen.append(rid)
        return original(rtype, rid)

    monkeypatch.setattr(data, "body", spy)
    assert ids(data, "Observation", [("code", "8462-4")]) == ["o1"]
    assert seen.count("o0") == 0 and seen.count("o2") == 0


def test_audit_trail_does_not_block_a_delete(data: EmbeddedStore) -> None:
    put(
        data,
        {
            "resourceType": "AuditEvent",
            "id": "ae",
            "type": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110110"},
            "recorded": "2021-01-01T00:00:00Z",
            "agent": [{"who": {"reference": "Practitioner/doc"}, "requestor": True}],
            "source": {"observer": {"reference": "Practitioner/doc"}},
            "entity": [{"what": {"reference": "Organization/org"}}],
        },
    )
    bob = data.read("Patient", "bob")
    bob.pop("managingOrganization", None)
    ann = data.read("Patient", "ann")
    ann.pop("managingOrganization")
    put(data, ann, bob)
    data.commit([WriteOp("delete", "Organization", id="org", cascade=True)])
    assert data.exists("AuditEvent", "ae")  # kept, not cascaded


def _audit(aid: str, patient: str, subtype: str = "read") -> dict[str, Any]:
    return {
        "resourceType": "AuditEvent",
        "id": aid,
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "x"},
        "subtype": [{"system": "http://hl7.org/fhir/restful-interaction", "code": subtype}],
        "recorded": "2024-01-01T00:00:00Z",
        "agent": [{"who": {"display": "tester"}, "requestor": True}],
        "source": {"observer": {"display": "fhircare"}},
        "entity": [{"what": {"reference": patient}}],
    }


def test_deferred_audit_index_follows_every_change(tmp_path: Path) -> None:
    """AuditEvents are indexed at the first search that needs them: searches between and
    after creates, repeated updates, deletes, re-creation and a reopen find what a scan
    would."""
    store = EmbeddedStore(tmp_path / "s", fsync=False)

    def found(params: list[tuple[str, str]]) -> list[str]:
        return ids(store, "AuditEvent", params)

    put(store, _audit("a1", "Patient/a"), _audit("a2", "Patient/b", "create"))
    assert found([("entity", "Patient/a")]) == ["a1"]
    assert found([("subtype", "create")]) == ["a2"]
    put(store, _audit("a1", "Patient/b"))
    assert found([("entity", "Patient/a")]) == []
    assert found([("entity", "Patient/b")]) == ["a1", "a2"]
    put(store, _audit("a2", "Patient/c", "update"))  # two versions with no search between
    put(store, _audit("a2", "Patient/d", "vread"))
    assert found([("entity", "Patient/b")]) == ["a1"]
    # referenced_by answers from the index alone: no key of a replaced version is left
    assert store.referenced_by("Patient", "b") == ["AuditEvent/a1"]
    assert store.referenced_by("Patient", "a") == store.referenced_by("Patient", "c") == []
    assert found([("entity", "Patient/c")]) == [] and found([("subtype", "update")]) == []
    assert found([("entity", "Patient/d")]) == ["a2"] and found([("subtype", "vread")]) == ["a2"]
    store.commit([WriteOp("delete", "AuditEvent", id="a1")])
    assert found([("entity", "Patient/b")]) == []
    assert store.referenced_by("Patient", "b") == []
    put(store, _audit("a1", "Patient/e"))  # created again after its deletion
    put(store, _audit("a3", "Patient/e", "delete"))
    assert found([("entity", "Patient/e")]) == ["a1", "a3"]
    store.close()
    store = EmbeddedStore(tmp_path / "s", fsync=False)
    assert found([("entity", "Patient/e")]) == ["a1", "a3"]
    assert found([("subtype", "vread")]) == ["a2"]
    assert store.referenced_by("Patient", "d") == ["AuditEvent/a2"]
    store.close()


def _panel(tmp_path: Path) -> tuple[EmbeddedStore, dict[str, tuple[str, set[str]]]]:
    """Twelve patients, each with Conditions of codes shared across the panel."""
    s = EmbeddedStore(tmp_path / "panel", fsync=False)
    icd = "http://hl7.org/fhir/sid/icd-10-cm"
    codes = ["E11.9", "I10", "J44.9", "N18.3", "Z59.0"]
    conditions: dict[str, tuple[str, set[str]]] = {}
    ops = []
    for p in range(12):
        ops.append(WriteOp("update", "Patient", id=f"p{p}", resource={"resourceType": "Patient"}))
        for c in range(p % 4 + 1):
            held = {codes[(p + c) % 5], codes[(p * c + 1) % 5]}
            cid = f"c{p}-{c}"
            conditions[cid] = (f"p{p}", held)
            body = {
                "resourceType": "Condition",
                "subject": {"reference": f"Patient/p{p}"},
                "code": {"coding": [{"system": icd, "code": k} for k in sorted(held)]},
            }
            ops.append(WriteOp("update", "Condition", id=cid, resource=body))
    s.commit(ops)
    return s, conditions


@pytest.mark.parametrize(
    "params",
    [
        [("patient", "Patient/p5"), ("code", "http://hl7.org/fhir/sid/icd-10-cm|I10,J44.9")],
        [("code", "I10,Z59.0"), ("subject", "Patient/p3")],
        [("patient", "p7"), ("code", "E11.9"), ("_id", "c7-0,c7-3,c1-0")],
        [("patient", "Patient/p2,Patient/p9"), ("code", "N18.3")],
        [("code", "http://hl7.org/fhir/sid/icd-10-cm|Z59.0")],
        [("patient", "Patient/p4"), ("code", "no-such-code")],
    ],
)
def test_combined_lookups_find_what_a_scan_finds(
    tmp_path: Path, params: list[tuple[str, str]]
) -> None:
    """A reference and a token criterion together (one patient's Conditions with one of a
    list of codes, as `/care/eligibility` searches) find exactly what checking every
    Condition against both finds."""
    s, conditions = _panel(tmp_path)
    by = dict(params)
    patients = {
        v.removeprefix("Patient/") for v in by.get("patient", by.get("subject", "")).split(",")
    }
    wanted = {v.rsplit("|", 1)[-1] for v in by["code"].split(",")}
    only = set(by["_id"].split(",")) if "_id" in by else None
    expected = sorted(
        cid
        for cid, (pid, held) in conditions.items()
        if (pid in patients or patients == {""}) and held & wanted and (only is None or cid in only)
    )
    assert ids(s, "Condition", params) == expected
    s.close()


def test_a_later_lookup_is_confined_to_what_the_first_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The code criterion after the patient criterion gives only that patient's
    Conditions: the index intersects each code's holders with them rather than collecting
    every Condition of the panel holding the code (the cost grew with the panel)."""
    s, conditions = _panel(tmp_path)
    given: list[set[str]] = []
    original = s._index.candidates

    def spy(*args: Any) -> set[str] | None:
        found = original(*args)
        given.append(set(found or ()))
        return found

    monkeypatch.setattr(s._index, "candidates", spy)
    mine = {cid for cid, (pid, _) in conditions.items() if pid == "p6"}
    found = ids(s, "Condition", [("patient", "Patient/p6"), ("code", "I10,J44.9,E11.9")])
    assert found and set(found) <= mine
    assert given and all(g <= mine for g in given)
    everyone = {cid for cid, (_, held) in conditions.items() if held & {"I10", "J44.9", "E11.9"}}
    assert everyone - mine  # the code alone is held by other patients' Conditions too
    s.close()


@pytest.mark.parametrize(
    "params",
    [
        [("code", "I10,J44.9,E11.9"), ("patient", "Patient/p6")],
        [("patient", "Patient/p6"), ("code", "I10,J44.9,E11.9")],
        [("code", "http://hl7.org/fhir/sid/icd-10-cm|I10,E11.9"), ("subject", "Patient/p6")],
    ],
)
def test_the_smallest_posting_set_is_looked_up_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, params: list[tuple[str, str]]
) -> None:
    """Whatever the query's order, the patient criterion (a few Conditions) runs before the
    code list (held across the panel): the codes' lookup is confined to the patient's
    Conditions and never materialises every holder of the codes. Same results as a scan."""
    s, conditions = _panel(tmp_path)
    calls: list[tuple[str, set[str] | None]] = []
    lookup_codes, lookup_refs = s._index.candidates, s._index.referrers

    def codes(resource_type: str, crit: Any, within: set[str] | None = None) -> set[str] | None:
        calls.append(("code", None if within is None else set(within)))
        return lookup_codes(resource_type, crit, within)

    def refs(resource_type: str, key: str, within: set[str] | None = None) -> set[str]:
        calls.append(("patient", None if within is None else set(within)))
        return lookup_refs(resource_type, key, within)

    monkeypatch.setattr(s._index, "candidates", codes)
    monkeypatch.setattr(s._index, "referrers", refs)
    wanted = {"I10", "J44.9", "E11.9"}
    mine = {cid for cid, (pid, _) in conditions.items() if pid == "p6"}
    found = ids(s, "Condition", params)
    held = set(params[0][1].replace("http://hl7.org/fhir/sid/icd-10-cm|", "").split(","))
    held = held if params[0][0] == "code" else wanted
    expected = {cid for cid, (pid, codes_) in conditions.items() if pid == "p6" and codes_ & held}
    assert set(found) == expected and expected
    assert [name for name, _ in calls] == ["patient", "code"]
    assert calls[0][1] is None  # the patient's Conditions come first, from the whole panel
    assert calls[1][1] is not None and calls[1][1] <= mine  # the codes: only among them
    everyone = {cid for cid, (_, h) in conditions.items() if h & held}
    assert everyone - mine  # the codes alone are held by other patients' Conditions too
    s.close()
