"""The registry carries the R4 definitions, and everything reads it."""

from __future__ import annotations

from fhir.resources.R4B import get_fhir_model_class

from fhircare.fhir import registry
from fhircare.fhir.fhirpath import compile_expression, is_fast
from fhircare.fhir.validation import SUPPORTED
from fhircare.security.compartment import PATIENT_COMPARTMENT, in_compartment


def test_every_r4_resource_type_is_served() -> None:
    types = registry.resource_types()
    assert len(types) == 146
    assert {"Claim", "ExplanationOfBenefit", "Bundle", "Binary", "OperationOutcome"} <= set(types)
    assert {"MedicinalProduct", "EffectEvidenceSynthesis"} <= set(types)  # R4, not R4B
    assert "Resource" not in types and "DomainResource" not in types
    assert set(types) == SUPPORTED


def test_package_origin_is_recorded() -> None:
    pkg = registry.package()
    assert (pkg["name"], pkg["version"], pkg["license"]) == ("hl7.fhir.r4.core", "4.0.1", "CC0-1.0")


def test_r4b_models_are_used_only_where_they_exist() -> None:
    for rtype in registry.resource_types():
        if rtype in registry.r4b_model_types():
            get_fhir_model_class(rtype)  # raises if fhir.resources lost the model
    validated_from_definitions = set(registry.resource_types()) - registry.r4b_model_types()
    assert {"Evidence", "EvidenceVariable", "SubstanceSpecification"} <= validated_from_definitions


def test_search_parameters_come_from_the_specification() -> None:
    patient = registry.R4.params("Patient")
    assert patient["birthdate"].url == "http://hl7.org/fhir/SearchParameter/individual-birthdate"
    assert patient["_lastUpdated"].type == "date"
    assert "status" not in patient  # the old hand-written list declared it; R4 has none
    assert "patient" in registry.R4.params("AllergyIntolerance")
    assert "period-end" not in registry.R4.params("Encounter")
    assert registry.R4.param("Observation", "code-value-quantity").components


def test_almost_every_expression_runs_on_the_fast_path() -> None:
    slow = []
    for rtype in registry.resource_types():
        for code, p in registry.R4.params(rtype).items():
            if p.expression:
                compile_expression(p.expression, rtype)  # compiles (fast path or fhirpathpy)
                if not is_fast(p.expression, rtype):
                    slow.append(f"{rtype}.{code}")
    assert sorted(slow) == ["InsurancePlan.name", "Patient.deceased"]


def test_the_patient_compartment_is_the_compartment_definition() -> None:
    assert PATIENT_COMPARTMENT["AuditEvent"] == ("patient",)
    assert "Task" not in PATIENT_COMPARTMENT
    audit = {
        "resourceType": "AuditEvent",
        "agent": [{"who": {"reference": "Patient/p1"}, "requestor": True}],
    }
    assert in_compartment(audit, "p1")
    assert set(registry.compartments()) == {
        "Patient",
        "Encounter",
        "RelatedPerson",
        "Practitioner",
        "Device",
    }


def test_operation_definitions_are_official() -> None:
    op = registry.operation_definition("everything", "Patient")
    assert op is not None and op.url == "http://hl7.org/fhir/OperationDefinition/Patient-everything"
