"""Patient compartment membership, search restrictions and the authorization decisions."""

from __future__ import annotations

import pytest

from fhircare.fhir.errors import Forbidden
from fhircare.security.compartment import (
    PATIENT_COMPARTMENT,
    SHARED_TYPES,
    compartment_search_alternatives,
    compartment_search_params,
    in_compartment,
    patient_id_of,
)
from fhircare.security.context import AuthContext
from fhircare.security.policy import AccessPolicy, allowed, authorize
from fhircare.security.scopes import ScopeSet

P = "pat-1"
OTHER = "pat-2"


def ref(id_: str) -> dict[str, str]:
    return {"reference": f"Patient/{id_}"}


@pytest.mark.parametrize(
    "resource",
    [
        {"resourceType": "Patient", "id": P},
        {
            "resourceType": "Patient",
            "id": "old-record",
            "link": [{"other": ref(P), "type": "replaced-by"}],
        },
        {"resourceType": "Observation", "subject": ref(P)},
        {"resourceType": "Observation", "subject": ref(OTHER), "performer": [ref(P)]},
        {"resourceType": "CarePlan", "subject": ref(P)},
        {
            "resourceType": "CarePlan",
            "subject": ref(OTHER),
            "activity": [{"detail": {"performer": [{"reference": "Practitioner/x"}, ref(P)]}}],
        },
        {"resourceType": "Condition", "subject": ref(P)},
        {"resourceType": "Condition", "subject": ref(OTHER), "asserter": ref(P)},
        {"resourceType": "Goal", "subject": ref(P)},
        {"resourceType": "Encounter", "subject": ref(P)},
        {"resourceType": "MedicationRequest", "subject": ref(P)},
        {"resourceType": "List", "source": ref(P)},
        {"resourceType": "DetectedIssue", "patient": ref(P)},
        {"resourceType": "Communication", "recipient": [ref(P)]},
        {"resourceType": "Provenance", "target": [{"reference": "Goal/1"}, ref(P)]},
        {"resourceType": "QuestionnaireResponse", "author": ref(P)},
        {"resourceType": "ServiceRequest", "subject": {"reference": f"Patient/{P}/_history/3"}},
        {"resourceType": "CareTeam", "participant": [{"member": ref(P)}]},
        {"resourceType": "SupplyRequest", "deliverTo": ref(P)},
    ],
)
def test_in_compartment(resource):
    assert in_compartment(resource, P)
    assert not in_compartment(resource, "someone-else")


@pytest.mark.parametrize(
    "resource",
    [
        {"resourceType": "Patient", "id": OTHER},
        {"resourceType": "Observation", "subject": ref(OTHER)},
        {"resourceType": "Observation", "subject": {"reference": f"Group/{P}"}},
        {"resourceType": "Observation", "subject": {"reference": f"Patient/{P}x"}},
        {"resourceType": "Observation", "focus": [ref(P)]},  # focus is no compartment link
        {"resourceType": "CarePlan", "author": ref(P)},  # nor is CarePlan.author
        {"resourceType": "Task", "for": ref(P)},  # R4 puts Task in no patient compartment
        {"resourceType": "Questionnaire", "id": P},
        {
            "resourceType": "Observation",
            "subject": {"reference": f"https://other.org/fhir/Patient/{P}"},
        },
        {"resourceType": "Observation", "subject": {"display": P}},
        {"subject": ref(P)},
    ],
)
def test_not_in_compartment(resource):
    assert not in_compartment(resource, P)


def test_absolute_reference_with_known_base():
    obs = {
        "resourceType": "Observation",
        "subject": {"reference": f"https://fc.example/fhir/Patient/{P}"},
    }
    assert in_compartment(obs, P, bases=["https://fc.example/fhir"])
    assert not in_compartment(obs, P, bases=["https://elsewhere.example/fhir"])


def test_patient_id_of():
    assert patient_id_of("Patient/abc-1.2") == "abc-1.2"
    assert patient_id_of("Patient/abc/_history/4") == "abc"
    assert patient_id_of("Practitioner/abc") is None
    assert patient_id_of("#contained") is None


def test_task_and_shared_types_are_not_compartment_types():
    assert "Task" not in PATIENT_COMPARTMENT
    assert "Questionnaire" in SHARED_TYPES
    assert not (SHARED_TYPES & PATIENT_COMPARTMENT.keys())


@pytest.mark.parametrize(
    ("rtype", "expected"),
    [
        ("Observation", [("subject", f"Patient/{P}")]),
        ("CarePlan", [("patient", f"Patient/{P}")]),
        ("Condition", [("patient", f"Patient/{P}")]),
        ("MedicationRequest", [("subject", f"Patient/{P}")]),
        ("Communication", [("subject", f"Patient/{P}")]),
        ("Patient", [("_id", P)]),
    ],
)
def test_compartment_search_params(rtype, expected):
    assert compartment_search_params(rtype, P) == expected


def test_compartment_search_params_refuses_non_compartment_type():
    with pytest.raises(Forbidden):
        compartment_search_params("Task", P)


def test_compartment_search_alternatives():
    assert compartment_search_alternatives("CarePlan", P) == [
        [("patient", f"Patient/{P}")],
        [("performer", f"Patient/{P}")],
    ]
    assert compartment_search_alternatives("Patient", P) == [
        [("_id", P)],
        [("link", f"Patient/{P}")],
    ]


# ---- authorize: scopes + compartment -------------------------------------------------


def ctx(scopes: str, patient: str | None = P) -> AuthContext:
    return AuthContext(
        subject="u1", client_id="app", scopes=ScopeSet.parse(scopes), patient=patient
    )


def test_from_claims():
    c = AuthContext.from_claims(
        {
            "sub": "u1",
            "azp": "my-app",
            "scope": "launch/patient patient/Goal.rs",
            "patient": "p9",
            "fhirUser": "https://fc.example/fhir/Practitioner/d1",
        }
    )
    assert (c.subject, c.client_id, c.patient) == ("u1", "my-app", "p9")
    assert c.fhir_user == "https://fc.example/fhir/Practitioner/d1"
    assert c.scopes.allows("Goal", "read")


def test_from_claims_patient_user_is_patient_context():
    c = AuthContext.from_claims({"sub": "u1", "scope": "patient/*.rs", "fhirUser": "Patient/p7"})
    assert c.patient == "p7"
    c = AuthContext.from_claims(
        {"sub": "u1", "scope": "patient/*.rs", "fhirUser": "Practitioner/d"}
    )
    assert c.patient is None


def test_patient_scope_allows_own_resource_denies_other():
    c = ctx("patient/CarePlan.rs")
    authorize(c, "CarePlan", "read", resource={"resourceType": "CarePlan", "subject": ref(P)})
    with pytest.raises(Forbidden, match="compartment"):
        authorize(
            c, "CarePlan", "read", resource={"resourceType": "CarePlan", "subject": ref(OTHER)}
        )


def test_missing_scope_is_named():
    with pytest.raises(Forbidden, match=r"requires scope patient/CarePlan\.c"):
        authorize(ctx("patient/CarePlan.rs"), "CarePlan", "create")


def test_patient_scope_without_patient_context():
    with pytest.raises(Forbidden, match="launch context"):
        authorize(ctx("patient/Goal.rs", patient=None), "Goal", "read")


def test_user_scope_has_no_compartment_limit():
    c = ctx("user/CarePlan.rs", patient=None)
    authorize(c, "CarePlan", "read", resource={"resourceType": "CarePlan", "subject": ref(OTHER)})


def test_patient_scope_denied_for_task():
    c = ctx("patient/*.cruds")
    with pytest.raises(Forbidden, match="Task is not in the FHIR R4 patient compartment"):
        authorize(c, "Task", "read", resource={"resourceType": "Task", "for": ref(P)})
    authorize(ctx("user/Task.rs"), "Task", "read", resource={"resourceType": "Task"})


def test_patient_scope_reads_shared_types_but_cannot_write_them():
    c = ctx("patient/*.cruds")
    authorize(c, "Questionnaire", "read", resource={"resourceType": "Questionnaire", "id": "q"})
    authorize(c, "Medication", "search-type")
    with pytest.raises(Forbidden, match="cannot modify"):
        authorize(c, "Questionnaire", "update", resource={"resourceType": "Questionnaire"})


def test_create_must_land_in_compartment():
    c = ctx("patient/Observation.c")
    authorize(
        c, "Observation", "create", resource={"resourceType": "Observation", "subject": ref(P)}
    )
    with pytest.raises(Forbidden):
        authorize(
            c,
            "Observation",
            "create",
            resource={"resourceType": "Observation", "subject": ref(OTHER)},
        )


def test_any_granting_scope_suffices():
    c = ctx("patient/Observation.rs user/Observation.r")
    authorize(
        c, "Observation", "read", resource={"resourceType": "Observation", "subject": ref(OTHER)}
    )


LAB = "http://terminology.hl7.org/CodeSystem/observation-category|laboratory"


def lab_obs(patient: str, category: str = "laboratory") -> dict:
    return {
        "resourceType": "Observation",
        "subject": ref(patient),
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": category,
                    }
                ]
            }
        ],
    }


def test_v2_query_scope_enforced_on_resource():
    c = ctx(f"patient/Observation.rs?category={LAB}")
    authorize(c, "Observation", "read", resource=lab_obs(P))
    with pytest.raises(Forbidden, match="query"):
        authorize(c, "Observation", "read", resource=lab_obs(P, "vital-signs"))
    with pytest.raises(Forbidden, match="compartment"):
        authorize(c, "Observation", "read", resource=lab_obs(OTHER))


def test_v2_query_is_evaluated_by_the_search_engine():
    c = ctx("user/Observation.rs?category:not=laboratory")
    assert allowed(c, lab_obs(P, "vital-signs"))
    assert not allowed(c, lab_obs(P))


def test_v2_query_the_engine_cannot_evaluate_on_one_resource_fails_closed():
    for query in ("subject:Patient.name=x", "_has:Provenance:target:agent=x", "foo=1"):
        c = ctx(f"user/Observation.rs?{query}")
        assert not allowed(c, lab_obs(P))


def test_search_restriction_patient_scope_is_each_compartment_link_and_query():
    policy = AccessPolicy(ctx(f"patient/Observation.rs?category={LAB}"))
    assert policy.searches("Observation") == [
        [("subject", f"Patient/{P}"), ("category", LAB)],
        [("performer", f"Patient/{P}"), ("category", LAB)],
    ]
    assert policy.permits(lab_obs(P), "s")
    assert not policy.permits(lab_obs(OTHER), "s")
    # an _include'd Patient: read needs a Patient scope
    assert not policy.permits({"resourceType": "Patient", "id": P}, "r")


def test_several_scopes_combine_as_a_union():
    vitals = f"{LAB.split('|')[0]}|vital-signs"
    policy = AccessPolicy(
        ctx(f"patient/Observation.rs?category={LAB} patient/Observation.rs?category={vitals}")
    )
    assert len(policy.searches("Observation") or []) == 4
    assert policy.permits(lab_obs(P), "s") and policy.permits(lab_obs(P, "vital-signs"), "s")
    assert not policy.permits(lab_obs(P, "social-history"), "s")


def test_included_resources_need_their_own_scope():
    policy = AccessPolicy(ctx("patient/CarePlan.rs patient/Patient.r patient/Goal.r"))
    assert policy.permits({"resourceType": "Patient", "id": P}, "r")
    assert not policy.permits({"resourceType": "Patient", "id": OTHER}, "r")
    assert not policy.permits({"resourceType": "Goal", "subject": ref(OTHER)}, "r")


def test_user_scope_is_unrestricted():
    policy = AccessPolicy(ctx("patient/CarePlan.rs user/CarePlan.s"))
    assert policy.searches("CarePlan") is None
    assert policy.permits({"resourceType": "CarePlan", "subject": ref(OTHER)}, "s")


def test_patient_scope_never_reaches_task():
    with pytest.raises(Forbidden, match="compartment"):
        AccessPolicy(ctx("patient/*.rs")).searches("Task")


def test_shared_type_is_not_restricted():
    policy = AccessPolicy(ctx("patient/*.rs"))
    assert policy.searches("Practitioner") is None
    assert policy.permits({"resourceType": "Practitioner", "id": "d1"}, "r")


def test_patient_writes_need_the_compartment_to_hold_only_that_patient():
    c = ctx("patient/*.cruds")
    mine = {"resourceType": "CarePlan", "subject": ref(P)}
    authorize(c, "CarePlan", "create", resource=mine)
    theirs = {
        "resourceType": "CarePlan",
        "subject": ref(OTHER),
        "activity": [{"detail": {"performer": [ref(P)]}}],
    }
    assert allowed(c, theirs, "read")  # A performs it: in A's compartment, A may read it
    with pytest.raises(Forbidden, match="another patient"):
        authorize(c, "CarePlan", "create", resource=theirs)
    with pytest.raises(Forbidden, match="create a Patient"):
        authorize(c, "Patient", "create", resource={"resourceType": "Patient"})
    with pytest.raises(Forbidden, match="delete a Patient"):
        authorize(c, "Patient", "delete", resource={"resourceType": "Patient", "id": P})
    authorize(c, "Patient", "update", resource={"resourceType": "Patient", "id": P})
    with pytest.raises(Forbidden, match="only its own"):
        authorize(c, "Patient", "update", resource={"resourceType": "Patient", "id": OTHER})



def test_unrestricted_context():
    c = AuthContext.unrestricted()
    authorize(c, "Task", "delete", resource={"resourceType": "Task"})
