"""The FHIR R4 compartments: membership tests and search restrictions.

The data comes from the registry (`fhircare.fhir.registry`): the CompartmentDefinitions of
FHIR R4 4.0.1 (Patient, Encounter, RelatedPerson, Practitioner, Device) say which search
parameters put a resource of each type in a compartment, and each parameter is evaluated
from its own R4 SearchParameter expression. Membership, `patient=` searches and
`$everything` therefore read one definition and agree (an AuditEvent whose patient is only
in `agent.who` is in the compartment and is found by `AuditEvent?patient=`).

Types the R4 definition lists without parameters (Task, Device, Questionnaire,
Medication, Practitioner...) are never in the compartment. Note that R4 does **not** put
Task in the patient compartment (``Task.for`` is not a compartment link in R4).
`SHARED_TYPES` names the definitional and administrative types that carry no patient
data; `fhircare.security.context` lets patient-context tokens read them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from fhircare.fhir import registry
from fhircare.fhir.errors import Forbidden
from fhircare.fhir.search import values as search_values
from fhircare.fhir.search.match import extract

# resource type -> the search parameters that link it to a patient (R4 CompartmentDefinition)
PATIENT_COMPARTMENT: Mapping[str, tuple[str, ...]] = registry.compartment("Patient").params

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


def compartment_references(resource: dict[str, Any], compartment: str = "Patient") -> list[str]:
    """The references ('Patient/x', or absolute) by which a resource is in compartments of
    the kind (from each compartment parameter's expression)."""
    rtype = resource.get("resourceType")
    if not isinstance(rtype, str):
        return []
    out: list[str] = []
    for code in registry.compartment(compartment).params.get(rtype, ()):
        param = registry.R4.param(rtype, code)
        if param is not None:
            out.extend(search_values.references(extract(param, resource)))
    return out


def in_compartment_of(
    resource: dict[str, Any], compartment: str, owner_id: str, *, bases: Iterable[str] = ()
) -> bool:
    """True when `resource` is in the compartment of `compartment`/`owner_id` (R4 rules)."""
    rtype = resource.get("resourceType")
    if not isinstance(rtype, str) or not owner_id:
        return False
    if rtype == compartment and resource.get("id") == owner_id:
        return True
    bases = tuple(bases)
    pattern = re.compile(rf"^(?P<base>.*?){compartment}/(?P<id>{_ID})(?:/_history/{_ID})?$")
    for ref in compartment_references(resource, compartment):
        m = pattern.match(ref)
        if m is None:
            continue
        base = m["base"]
        if base and base not in {b.rstrip("/") + "/" for b in bases}:
            continue
        if m["id"] == owner_id:
            return True
    return False


def is_compartment_type(resource_type: str) -> bool:
    """True when resources of this type can be in a patient compartment."""
    return resource_type in PATIENT_COMPARTMENT


def in_compartment(resource: dict[str, Any], patient_id: str, *, bases: Iterable[str] = ()) -> bool:
    """True when `resource` is in the compartment of Patient/`patient_id` (R4 rules)."""
    return in_compartment_of(resource, "Patient", patient_id, bases=bases)


def _primary_param(resource_type: str) -> str:
    params = list(PATIENT_COMPARTMENT[resource_type])
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
    return compartment_searches("Patient", patient_id, resource_type)


def compartment_searches(
    compartment: str, owner_id: str, resource_type: str
) -> list[list[tuple[str, str]]]:
    """One search per compartment parameter of the type; the union of their results is the
    type's part of the compartment of `compartment`/`owner_id` (empty: not in it)."""
    alternatives: list[list[tuple[str, str]]] = []
    if resource_type == compartment:
        alternatives.append([("_id", owner_id)])
    for param in registry.compartment(compartment).params.get(resource_type, ()):
        alternatives.append([(param, f"{compartment}/{owner_id}")])
    return alternatives
