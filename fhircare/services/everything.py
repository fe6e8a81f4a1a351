"""Patient/$everything (FHIR R4 patient-operation-everything): what one patient's record holds.

The patient, every resource in its Patient compartment (the official CompartmentDefinition,
through `fhircare.security.compartment`), and the resources those reference that carry no
other patient's data (Organization, Practitioner, PractitionerRole, Medication, Location,
Encounter...), as HAPI FHIR includes them. `_since` and `_type` narrow the result; the
caller pages it (`_count`) in the stable order returned here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from fhircare.fhir.errors import BadRequest, Forbidden
from fhircare.fhir.references import iter_references, parse_local
from fhircare.fhir.validation import SUPPORTED_TYPES
from fhircare.security.compartment import (
    compartment_search_alternatives,
    in_compartment,
    is_compartment_type,
)
from fhircare.store.base import Store

Resource = dict[str, Any]


@dataclass(frozen=True)
class Everything:
    """The resources of one $everything, in order: matches (compartment), then includes."""

    matches: list[Resource]
    includes: list[Resource]


def patient_everything(
    store: Store,
    patient: Resource,
    *,
    since: str | None = None,
    types: Iterable[str] | None = None,
    bases: Iterable[str] = (),
) -> Everything:
    """The patient's compartment and what it references; `since` is a UTC instant string
    (meta.lastUpdated >= since), `types` the resource types to return (None: all)."""
    pid = patient["id"]
    wanted = set(types) if types is not None else None
    compartment: dict[tuple[str, str], Resource] = {("Patient", pid): patient}
    for rtype in SUPPORTED_TYPES:
        if is_compartment_type(rtype):
            for resource in _compartment_of_type(store, rtype, pid, bases):
                compartment.setdefault((rtype, resource["id"]), resource)
    referenced: dict[tuple[str, str], Resource] = {}
    for resource in compartment.values():
        for _, ref in iter_references(resource):
            local = parse_local(ref["reference"])
            if local is None:
                continue
            key = (local[0], local[1])
            if key in compartment or key in referenced or not store.exists(*key):
                continue
            try:
                target = store.read(*key)
            except Forbidden:
                continue  # not the caller's to see (a gated store)
            if is_compartment_type(key[0]) and not in_compartment(target, pid, bases=bases):
                continue  # another patient's record: never part of this one
            referenced[key] = target

    def keep(resource: Resource) -> bool:
        if wanted is not None and resource["resourceType"] not in wanted:
            return False
        updated = (resource.get("meta") or {}).get("lastUpdated") or ""
        return since is None or updated >= since

    patient_first = sorted(compartment, key=lambda k: (k != ("Patient", pid), k))
    return Everything(
        matches=[compartment[k] for k in patient_first if keep(compartment[k])],
        includes=[referenced[k] for k in sorted(referenced) if keep(referenced[k])],
    )


def _compartment_of_type(
    store: Store, resource_type: str, patient_id: str, bases: Iterable[str]
) -> list[Resource]:
    """Every resource of the type in the patient's compartment: the union of one search per
    compartment link; a link the search engine cannot express yet falls back to a scan of the
    type filtered by the compartment rule (slow, never incomplete)."""
    found: dict[str, Resource] = {}
    for params in compartment_search_alternatives(resource_type, patient_id):
        try:
            results = store.search(resource_type, params)
        except Forbidden:
            return []  # a type the caller may not search (a gated store)
        except BadRequest:
            results = [
                r
                for r in store.search(resource_type, [])
                if in_compartment(r, patient_id, bases=bases)
            ]
        for resource in results:
            found.setdefault(resource["id"], resource)
    return list(found.values())
