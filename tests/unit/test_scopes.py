"""SMART v1/v2 scope parsing and scope decisions."""

from __future__ import annotations

import pytest

from fhircare.fhir.errors import Forbidden
from fhircare.security.scopes import ScopeSet, check, parse_scope, required


@pytest.mark.parametrize(
    ("interaction", "letter"),
    [
        ("create", "c"),
        ("read", "r"),
        ("vread", "r"),
        ("history-instance", "r"),
        ("update", "u"),
        ("patch", "u"),
        ("delete", "d"),
        ("search-type", "s"),
        ("history-type", "s"),
    ],
)
def test_required_letter(interaction, letter):
    assert required(interaction) == letter


def test_required_unknown_interaction():
    with pytest.raises(ValueError):
        required("transaction")


@pytest.mark.parametrize(
    ("text", "level", "rtype", "perms"),
    [
        ("patient/CarePlan.rs", "patient", "CarePlan", "rs"),
        ("user/Task.cu", "user", "Task", "cu"),
        ("system/*.cruds", "system", "*", "cruds"),
        ("patient/*.read", "patient", "*", "rs"),
        ("user/Observation.write", "user", "Observation", "cud"),
        ("user/Observation.*", "user", "Observation", "cruds"),
        ("system/Patient.r", "system", "Patient", "r"),
    ],
)
def test_parse_resource_scopes(text, level, rtype, perms):
    scope = parse_scope(text)
    assert scope is not None
    assert (scope.level, scope.resource_type, scope.permissions) == (
        level,
        rtype,
        frozenset(perms),
    )
    assert scope.query == ()


@pytest.mark.parametrize(
    "text",
    [
        "patient/CarePlan.sr",  # v2 letters out of order
        "patient/CarePlan.rr",  # repeated letter
        "patient/CarePlan.x",
        "patient/carePlan.rs",  # not a resource type
        "admin/CarePlan.rs",
        "patient/CarePlan",
        "openid",
        "launch/patient",
        "patient/Observation.rs?",  # empty query
        "patient/Observation.rs?category",  # parameter without value
    ],
)
def test_not_resource_scopes(text):
    assert parse_scope(text) is None


def test_v2_query_scope_is_parsed():
    scope = parse_scope(
        "patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/"
        "observation-category|laboratory"
    )
    assert scope is not None
    assert scope.resource_type == "Observation"
    assert scope.query == (
        (
            "category",
            "http://terminology.hl7.org/CodeSystem/observation-category|laboratory",
        ),
    )


def test_scopeset_splits_other_scopes():
    scopes = ScopeSet.parse("openid fhirUser launch/patient patient/Goal.rs offline_access")
    assert [s.raw for s in scopes.resource] == ["patient/Goal.rs"]
    assert scopes.other == {"openid", "fhirUser", "launch/patient", "offline_access"}


def test_scopeset_from_list_claim():
    scopes = ScopeSet.parse(["patient/Goal.rs", "user/Task.cu"])
    assert scopes.allows("Task", "update")
    assert not scopes.allows("Task", "read")


def test_wildcard_type():
    scopes = ScopeSet.parse("patient/*.rs")
    assert scopes.allows("CarePlan", "read")
    assert scopes.allows("Observation", "search-type")
    assert not scopes.allows("CarePlan", "create")


def test_v1_read_grants_search_not_write():
    scopes = ScopeSet.parse("user/Observation.read")
    assert scopes.allows("Observation", "read")
    assert scopes.allows("Observation", "search-type")
    for interaction in ("create", "update", "delete"):
        assert not scopes.allows("Observation", interaction)


def test_v1_write_grants_cud_not_read():
    scopes = ScopeSet.parse("user/Observation.write")
    assert scopes.allows("Observation", "create")
    assert scopes.allows("Observation", "delete")
    assert not scopes.allows("Observation", "read")


def test_other_type_not_granted():
    scopes = ScopeSet.parse("patient/CarePlan.rs")
    assert not scopes.allows("Goal", "read")


def test_check_returns_granting_scopes():
    scopes = ScopeSet.parse("patient/CarePlan.r user/*.rs")
    granting = check(scopes, "CarePlan", "read")
    assert {s.raw for s in granting} == {"patient/CarePlan.r", "user/*.rs"}


def test_check_missing_scope_message_names_scope():
    scopes = ScopeSet.parse("patient/CarePlan.s")
    with pytest.raises(Forbidden) as err:
        check(scopes, "CarePlan", "read")
    assert err.value.status == 403
    assert "requires scope patient/CarePlan.r (or user/, system/" in err.value.diagnostics
    assert err.value.outcome()["issue"][0]["code"] == "forbidden"


def test_check_write_message_mentions_v1_write():
    with pytest.raises(Forbidden, match=r"patient/Task\.c .*\.write"):
        check(ScopeSet.parse(""), "Task", "create")
