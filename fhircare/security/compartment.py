"""The FHIR R4 patient compartment: membership tests and search restrictions.

Source: CompartmentDefinition/patient of FHIR R4 4.0.1
(https://hl7.org/fhir/R4/compartmentdefinition-patient.html), with each search parameter
resolved to its element path from the R4 SearchParameter definitions. Every R4 search
parameter the compartment uses is a reference parameter; a ``.where(resolve() is Patient)``
filter is implied here because only references to ``Patient/<id>`` are matched.

Types the R4 definition lists without parameters (Task, Device, Questionnaire,
Medication, Practitioner...) are never in the compartment. Note that R4 does **not** put
Task in the patient compartment (``Task.for`` is not a compartment link in R4).
`SHARED_TYPES` names the definitional and administrative types that carry no patient
data; `fhircare.security.context` lets patient-context tokens read them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

from fhircare.fhir.errors import Forbidden

# resource type -> ((search parameter, element path), ...) per R4 4.0.1
PATIENT_COMPARTMENT: dict[str, tuple[tuple[str, str], ...]] = {
    "Account": (("subject", "subject"),),
    "AdverseEvent": (("subject", "subject"),),
    "AllergyIntolerance": (
        ("patient", "patient"),
        ("recorder", "recorder"),
        ("asserter", "asserter"),
    ),
    "Appointment": (("actor", "participant.actor"),),
    "AppointmentResponse": (("actor", "actor"),),
    "AuditEvent": (("patient", "agent.who"), ("patient", "entity.what")),
    "Basic": (("patient", "subject"), ("author", "author")),
    "BodyStructure": (("patient", "patient"),),
    "CarePlan": (("patient", "subject"), ("performer", "activity.detail.performer")),
    "CareTeam": (("patient", "subject"), ("participant", "participant.member")),
    "ChargeItem": (("subject", "subject"),),
    "Claim": (("patient", "patient"), ("payee", "payee.party")),
    "ClaimResponse": (("patient", "patient"),),
    "ClinicalImpression": (("subject", "subject"),),
    "Communication": (
        ("subject", "subject"),
        ("sender", "sender"),
        ("recipient", "recipient"),
    ),
    "CommunicationRequest": (
        ("subject", "subject"),
        ("sender", "sender"),
        ("recipient", "recipient"),
        ("requester", "requester"),
    ),
    "Composition": (
        ("subject", "subject"),
        ("author", "author"),
        ("attester", "attester.party"),
    ),
    "Condition": (("patient", "subject"), ("asserter", "asserter")),
    "Consent": (("patient", "patient"),),
    "Coverage": (
        ("policy-holder", "policyHolder"),
        ("subscriber", "subscriber"),
        ("beneficiary", "beneficiary"),
        ("payor", "payor"),
    ),
    "CoverageEligibilityRequest": (("patient", "patient"),),
    "CoverageEligibilityResponse": (("patient", "patient"),),
    "DetectedIssue": (("patient", "patient"),),
    "DeviceRequest": (("subject", "subject"), ("performer", "performer")),
    "DeviceUseStatement": (("subject", "subject"),),
    "DiagnosticReport": (("subject", "subject"),),
    "DocumentManifest": (
        ("subject", "subject"),
        ("author", "author"),
        ("recipient", "recipient"),
    ),
    "DocumentReference": (("subject", "subject"), ("author", "author")),
    "Encounter": (("patient", "subject"),),
    "EnrollmentRequest": (("subject", "candidate"),),
    "EpisodeOfCare": (("patient", "patient"),),
    "ExplanationOfBenefit": (("patient", "patient"), ("payee", "payee.party")),
    "FamilyMemberHistory": (("patient", "patient"),),
    "Flag": (("patient", "subject"),),
    "Goal": (("patient", "subject"),),
    "Group": (("member", "member.entity"),),
    "ImagingStudy": (("patient", "subject"),),
    "Immunization": (("patient", "patient"),),
    "ImmunizationEvaluation": (("patient", "patient"),),
    "ImmunizationRecommendation": (("patient", "patient"),),
    "Invoice": (("subject", "subject"), ("patient", "subject"), ("recipient", "recipient")),
    "List": (("subject", "subject"), ("source", "source")),
    "MeasureReport": (("patient", "subject"),),
    "Media": (("subject", "subject"),),
    "MedicationAdministration": (
        ("patient", "subject"),
        ("performer", "performer.actor"),
        ("subject", "subject"),
    ),
    "MedicationDispense": (
        ("subject", "subject"),
        ("patient", "subject"),
        ("receiver", "receiver"),
    ),
    "MedicationRequest": (("subject", "subject"),),
    "MedicationStatement": (("subject", "subject"),),
    "MolecularSequence": (("patient", "patient"),),
    "NutritionOrder": (("patient", "patient"),),
    "Observation": (("subject", "subject"), ("performer", "performer")),
    "Patient": (("link", "link.other"),),
    "Person": (("patient", "link.target"),),
    "Procedure": (("patient", "subject"), ("performer", "performer.actor")),
    "Provenance": (("patient", "target"),),
    "QuestionnaireResponse": (("subject", "subject"), ("author", "author")),
    "RelatedPerson": (("patient", "patient"),),
    "RequestGroup": (("subject", "subject"), ("participant", "action.participant")),
    "ResearchSubject": (("individual", "individual"),),
    "RiskAssessment": (("subject", "subject"),),
    "Schedule": (("actor", "actor"),),
    "ServiceRequest": (("subject", "subject"), ("performer", "performer")),
    "Specimen": (("subject", "subject"),),
    "SupplyDelivery": (("patient", "patient"),),
    "SupplyRequest": (("subject", "deliverTo"),),
    "VisionPrescription": (("patient", "patient"),),
}

# Types with no patient data that a patient-context app may read (definitions, directory
# and terminology). Anything neither here nor in PATIENT_COMPARTMENT is denied to
# patient-context tokens (Task, Device, Subscription, Bundle, Binary...).
SHARED_TYPES: frozenset[str] = frozenset(
    {
        "ActivityDefinition",
        "CapabilityStatement",
        "CodeSystem",
        "ConceptMap",
        "Endpoint",
        "HealthcareService",
        "Library",
        "Location",
        "Medication",
        "MedicationKnowledge",
        "ObservationDefinition",
        "OperationDefinition",
        "Organization",
        "PlanDefinition",
        "Practitioner",
        "PractitionerRole",
        "Questionnaire",
        "SearchParameter",
        "StructureDefinition",
        "Substance",
        "ValueSet",
    }
)

_ID = r"[A-Za-z0-9\-.]{1,64}"
_PATIENT_REF = re.compile(rf"^(?P<base>.*?)Patient/(?P<id>{_ID})(?:/_history/{_ID})?$")


def patient_id_of(reference: str, bases: Iterable[str] = ()) -> str | None:
    """The patient id a reference string points at, or None.

    Accepts ``Patient/123`` and ``Patient/123/_history/2``; an absolute URL only when its
    base (``https://host/fhir/``) is one of `bases` (references to other servers are not
    the same patient).
    """
    m = _PATIENT_REF.match(reference)
    if m is None:
        return None
    base = m["base"]
    if base and base not in {b.rstrip("/") + "/" for b in bases}:
        return None
    return m["id"]


def _values(node: Any, path: list[str]) -> Iterator[Any]:
    if isinstance(node, list):
        for item in node:
            yield from _values(item, path)
        return
    if not path:
        yield node
        return
    if isinstance(node, dict) and path[0] in node:
        yield from _values(node[path[0]], path[1:])


def _refs(resource: dict[str, Any], path: str) -> Iterator[str]:
    for value in _values(resource, path.split(".")):
        if isinstance(value, dict) and isinstance(value.get("reference"), str):
            yield value["reference"]


def is_compartment_type(resource_type: str) -> bool:
    """True when resources of this type can be in a patient compartment."""
    return resource_type in PATIENT_COMPARTMENT


def in_compartment(resource: dict[str, Any], patient_id: str, *, bases: Iterable[str] = ()) -> bool:
    """True when `resource` is in the compartment of Patient/`patient_id` (R4 rules)."""
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str) or not patient_id:
        return False
    if resource_type == "Patient" and resource.get("id") == patient_id:
        return True
    bases = tuple(bases)
    for _param, path in PATIENT_COMPARTMENT.get(resource_type, ()):
        for ref in _refs(resource, path):
            if patient_id_of(ref, bases) == patient_id:
                return True
    return False


def _primary_param(resource_type: str) -> str:
    params = [p for p, _ in PATIENT_COMPARTMENT[resource_type]]
    for preferred in ("patient", "subject"):
        if preferred in params:
            return preferred
    return params[0]


def compartment_search_params(resource_type: str, patient_id: str) -> list[tuple[str, str]]:
    """Search parameters to AND into a search so it stays inside the patient's compartment.

    One parameter, the one naming the patient as the record's subject (``patient`` or
    ``subject``; ``_id`` for Patient). The result is a subset of the compartment: records
    where the patient is only performer/author/recipient are not found this way; use
    `compartment_search_alternatives` and union the results to get them all. Raises
    Forbidden for types that are never in the patient compartment.
    """
    if resource_type == "Patient":
        return [("_id", patient_id)]
    if resource_type not in PATIENT_COMPARTMENT:
        raise Forbidden(f"{resource_type} is not in the patient compartment")
    return [(_primary_param(resource_type), f"Patient/{patient_id}")]


def compartment_search_alternatives(
    resource_type: str, patient_id: str
) -> list[list[tuple[str, str]]]:
    """One parameter list per compartment link; the union of their results is the compartment."""
    if resource_type not in PATIENT_COMPARTMENT:
        raise Forbidden(f"{resource_type} is not in the patient compartment")
    alternatives: list[list[tuple[str, str]]] = []
    if resource_type == "Patient":
        alternatives.append([("_id", patient_id)])
    for param in dict.fromkeys(p for p, _ in PATIENT_COMPARTMENT[resource_type]):
        alternatives.append([(param, f"Patient/{patient_id}")])
    return alternatives
