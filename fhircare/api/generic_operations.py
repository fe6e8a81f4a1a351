"""Operations every FHIR server is expected to have: $validate, $everything, $meta."""

from __future__ import annotations

import urllib.parse
from typing import Any

from fhircare.api.operations import OpCall, Operation, OperationRegistry
from fhircare.fhir.errors import BadRequest, FhirError
from fhircare.fhir.validation import check_type, validate_resource
from fhircare.services.everything import patient_everything
from fhircare.services.searching import since_param


def validate(call: OpCall) -> dict[str, Any]:
    """$validate: structure, datatypes, cardinality and closed code bindings."""
    resource = (
        call.param("resource")
        if call.body and call.body.get("resourceType") == "Parameters"
        else call.body
    )
    if resource is None and call.id:
        resource = call.svc.read(call.resource_type, call.id)
    if not isinstance(resource, dict):
        raise BadRequest("$validate needs a resource (body or Parameters.parameter 'resource')")
    try:
        validate_resource(resource, call.resource_type)
    except FhirError as exc:
        oo = exc.outcome()
        return oo, 200 if exc.status in (400, 422) else exc.status  # type: ignore[return-value]
    return {
        "resourceType": "OperationOutcome",
        "issue": [
            {"severity": "information", "code": "informational", "diagnostics": "No issues found"}
        ],
    }


EVERYTHING_PARAMS = ("_since", "_type", "_count", "_offset", "_format", "_pretty")


def everything(call: OpCall) -> dict[str, Any]:
    """Patient/$everything: the patient, its compartment and the resources those reference,
    with `_since`, `_type` and `_count` (paged by `next` links). `start`/`end` (care dates)
    are refused: not supported."""
    state = call.state
    unknown = sorted({k for k, _ in call.query if k not in EVERYTHING_PARAMS})
    if isinstance(call.body, dict) and call.body.get("resourceType") == "Parameters":
        unknown += [
            p.get("name")
            for p in call.body.get("parameter") or []
            if p.get("name") not in EVERYTHING_PARAMS
        ]
    if unknown:
        raise BadRequest(
            f"$everything does not support {', '.join(map(str, unknown))} "
            "(it takes _since, _type and _count)",
            code="not-supported",
        )
    patient = call.svc.read("Patient", call.id)
    params = [(k, str(v)) for k in EVERYTHING_PARAMS if (v := call.param(k)) is not None]
    types = None
    if call.param("_type"):
        types = [t.strip() for t in str(call.param("_type")).split(",") if t.strip()]
        for rtype in types:
            check_type(rtype)
    found = patient_everything(
        call.store,
        patient,
        since=since_param(params),
        types=types,
        bases=(state.base_url,),
    )
    ordered = [(r, "match") for r in found.matches] + [(r, "include") for r in found.includes]
    count = min(_count(call.param("_count"), state.paging.default_count), state.paging.max_count)
    offset = _count(call.param("_offset"), 0)
    page = ordered[offset : offset + count]
    path = f"Patient/{call.id}/$everything"
    link = [{"relation": "self", "url": _page_url(state.base_url, path, params)}]
    if offset + count < len(ordered) and count:
        link.append(
            {
                "relation": "next",
                "url": _page_url(state.base_url, path, params, count, offset + count),
            }
        )
    if offset > 0 and count:
        previous = max(0, offset - count)
        link.append(
            {
                "relation": "previous",
                "url": _page_url(state.base_url, path, params, count, previous),
            }
        )
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(ordered),
        "link": link,
        "entry": [
            {
                "fullUrl": f"{state.base_url}/{r['resourceType']}/{r['id']}",
                "resource": r,
                "search": {"mode": mode},
            }
            for r, mode in page
        ],
    }
    call.access.audit_search("Patient", f"_id={call.id}&$everything", bundle)
    return bundle


def _count(value: Any, default: int) -> int:
    if value is None:
        return default
    try:
        number = int(str(value))
    except ValueError as exc:
        raise BadRequest(f"Expected a whole number, not {str(value)[:40]!r}", code="value") from exc
    if number < 0:
        raise BadRequest("_count and _offset must not be negative", code="value")
    return number


def _page_url(
    base_url: str,
    path: str,
    params: list[tuple[str, str]],
    count: int | None = None,
    offset: int | None = None,
) -> str:
    dropped = ("_format", "_pretty") + (("_count", "_offset") if count is not None else ())
    kept = [(k, v) for k, v in params if k not in dropped]
    if count is not None:
        kept += [("_count", str(count)), ("_offset", str(offset or 0))]
    query = urllib.parse.urlencode(kept)
    return f"{base_url}/{path}" + (f"?{query}" if query else "")


def register(ops: OperationRegistry) -> None:
    ops.add(
        Operation(
            "validate", validate, "type", affects_state=False, description="Validate a resource"
        )
    )
    ops.add(Operation("validate", validate, "instance", affects_state=False))
    ops.add(
        Operation(
            "everything",
            everything,
            "instance",
            ("Patient",),
            affects_state=False,
            description="Everything about a patient",
        )
    )
