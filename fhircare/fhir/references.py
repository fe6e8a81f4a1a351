"""Finding and rewriting references inside FHIR resources."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

from fhircare.fhir.validation import SUPPORTED

LOCAL_REF = re.compile(
    r"^(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})(/_history/(?P<vid>[A-Za-z0-9\-.]{1,64}))?$"
)


def iter_references(node: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """(element path, Reference dict) for every Reference with a `reference` string."""
    if isinstance(node, dict):
        ref = node.get("reference")
        if isinstance(ref, str):
            yield path, node
        for key, value in node.items():
            if key in ("contained", "reference"):
                continue
            yield from iter_references(value, f"{path}.{key}" if path else key)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from iter_references(item, f"{path}[{i}]")


def rewrite_references(resource: dict[str, Any], mapping: Callable[[str], str | None]) -> None:
    """Replace each reference string for which `mapping` returns a new value (in place),
    in the resource and in its contained resources."""
    for _, ref in iter_references(resource):
        new = mapping(ref["reference"])
        if new is not None:
            ref["reference"] = new
    for inner in resource.get("contained") or []:
        if isinstance(inner, dict):
            rewrite_references(inner, mapping)


def parse_local(reference: str, base_url: str | None = None) -> tuple[str, str, str | None] | None:
    """('Patient', 'x', vid|None) for a reference to this server, else None."""
    ref = reference
    if base_url and ref.startswith(base_url.rstrip("/") + "/"):
        ref = ref[len(base_url.rstrip("/")) + 1 :]
    m = LOCAL_REF.match(ref)
    if not m or m["type"] not in SUPPORTED:
        return None
    return m["type"], m["id"], m["vid"]


def subject_reference(resource: dict[str, Any]) -> str | None:
    """The patient a resource is about (subject, patient, for), as 'Patient/x'."""
    if resource.get("resourceType") == "Patient":
        return f"Patient/{resource.get('id')}"
    for key in ("subject", "patient", "for", "beneficiary"):
        value = resource.get(key)
        if isinstance(value, dict) and isinstance(value.get("reference"), str):
            ref = value["reference"]
            if "Patient/" in ref:
                return "Patient/" + ref.split("Patient/")[-1].split("/")[0]
    return None
