"""The JSON shape of a transaction or batch Bundle, checked at intake.

Everything that later walks a Bundle (the access check, planning, the batch loop) may then
rely on it: `entry` is an array of objects, each `request` an object whose `method` is an
HTTP verb and whose `url` and conditional headers are strings, each `fullUrl` a unique
string and each `resource` an object with a `resourceType`. A Bundle that is not of that
shape is refused with a 400 whose `issue.expression` names the element.
"""

from __future__ import annotations

from typing import Any

from fhircare.fhir.errors import BadRequest

METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH")
# Bundle.entry.request's string elements besides method and url (R4 BackboneElement)
_REQUEST_STRINGS = ("ifNoneMatch", "ifModifiedSince", "ifMatch", "ifNoneExist")
_NEEDS_RESOURCE = ("POST", "PUT", "PATCH")


def check_bundle_shape(bundle: Any, max_entries: int) -> list[dict[str, Any]]:
    """The entries of a transaction or batch Bundle whose shape is sound; BadRequest (400,
    or 413 beyond `max_entries` entries) otherwise."""
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise BadRequest("POST to the base needs a Bundle")
    if bundle.get("type") not in ("transaction", "batch"):
        raise BadRequest(
            f"Bundle.type must be transaction or batch, not {_shown(bundle.get('type'))}",
            expression=["Bundle.type"],
        )
    entries = bundle.get("entry")
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise BadRequest("Bundle.entry must be an array", expression=["Bundle.entry"])
    if len(entries) > max_entries:
        raise BadRequest(
            f"The Bundle has {len(entries)} entries; the limit is {max_entries}",
            code="too-costly",
            status=413,
        )
    full_urls: set[str] = set()
    for i, entry in enumerate(entries):
        _check_entry(entry, f"Bundle.entry[{i}]", full_urls)
    return entries


def _check_entry(entry: Any, where: str, full_urls: set[str]) -> None:
    if not isinstance(entry, dict):
        raise BadRequest(f"{where} must be an object", expression=[where])
    request = entry.get("request")
    if not isinstance(request, dict):
        raise BadRequest(f"{where}.request must be an object", expression=[f"{where}.request"])
    method = request.get("method")
    if not isinstance(method, str) or method not in METHODS:
        raise BadRequest(
            f"{where}.request.method {_shown(method)} is not an HTTP verb "
            f"({', '.join(METHODS)})",
            expression=[f"{where}.request.method"],
        )
    url = request.get("url")
    if not isinstance(url, str) or not url.strip():
        raise BadRequest(
            f"{where}.request.url must be a non-empty string", expression=[f"{where}.request.url"]
        )
    for name in _REQUEST_STRINGS:
        if name in request and not isinstance(request[name], str):
            raise BadRequest(
                f"{where}.request.{name} must be a string", expression=[f"{where}.request.{name}"]
            )
    full_url = entry.get("fullUrl")
    if full_url is not None:
        # bdl-7: fullUrl is unique in a transaction or batch (references resolve by it)
        if not isinstance(full_url, str) or not full_url or full_url in full_urls:
            raise BadRequest(
                f"{where}.fullUrl {_shown(full_url)} is not a unique string",
                expression=[f"{where}.fullUrl"],
            )
        full_urls.add(full_url)
    resource = entry.get("resource")
    if resource is not None and (
        not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str)
    ):
        raise BadRequest(
            f"{where}.resource must be a resource (an object with a resourceType)",
            expression=[f"{where}.resource"],
        )
    if method in _NEEDS_RESOURCE and resource is None:
        what = (
            "the patch as its resource: a Binary (JSON Patch) or a Parameters (FHIRPath Patch)"
            if method == "PATCH"
            else "a resource"
        )
        raise BadRequest(f"{where} ({method}) needs {what}", expression=[f"{where}.resource"])


def _shown(value: Any) -> str:
    """A short, safe rendering of a wrong value for a message."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


__all__ = ["METHODS", "check_bundle_shape"]
