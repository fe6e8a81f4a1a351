"""PATCH bodies applied to a resource: JSON Patch, FHIRPath Patch and JSON Merge Patch.

* JSON Patch (RFC 6902, `application/json-patch+json`) through the `jsonpatch` library.
* FHIRPath Patch (FHIR R4 fhirpatch.html): a `Parameters` body of `operation`s (add, insert,
  delete, replace, move). Paths are evaluated with fhirpathpy; each result carries its
  concrete location (`Patient.name[0].given[1]`), which is where the change is made.
* JSON Merge Patch (RFC 7386, `application/merge-patch+json`): what fhirpy's `patch()`
  sends (a partial resource; `null` removes an element).

`apply_patch` returns a new resource and never touches the one it is given; the caller
validates the result like any update.
"""

from __future__ import annotations

import base64
import binascii
import copy
import re
from dataclasses import dataclass
from typing import Any, Literal

import jsonpatch
import jsonpointer
from fhirpathpy import evaluate
from fhirpathpy.models import models

from fhircare.fhir import jsonio
from fhircare.fhir.errors import BadRequest, FhirError, Unprocessable
from fhircare.fhir.parameters_shape import check_parameters_shape
from fhircare.fhir.validation import validate_resource

PatchKind = Literal["json-patch", "fhirpath-patch", "merge-patch"]
JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
Resource = dict[str, Any]


@dataclass(frozen=True)
class Patch:
    """A PATCH body and how to read it."""

    kind: PatchKind
    body: Any


def patch_of(content_type: str, body: Any) -> Patch:
    """Which patch a body is, from its Content-Type and shape (400 when neither fits).

    `application/json-patch+json` is JSON Patch; a `Parameters` resource is FHIRPath Patch;
    `application/merge-patch+json`, or another JSON object sent as `application/json` or
    `application/fhir+json` (fhirpy's `patch()`), is a merge patch.
    """
    if content_type == JSON_PATCH or (isinstance(body, list) and content_type != MERGE_PATCH):
        if not isinstance(body, list):
            raise BadRequest("A JSON Patch body is an array of operations (RFC 6902)")
        return Patch("json-patch", body)
    if not isinstance(body, dict):
        raise BadRequest("A PATCH body is a JSON Patch array, a Parameters resource or an object")
    if content_type != MERGE_PATCH and body.get("resourceType") == "Parameters":
        return Patch("fhirpath-patch", body)
    return Patch("merge-patch", body)


def patch_in_bundle(resource: Any) -> Patch:
    """The patch a transaction/batch PATCH entry carries: a Binary holding a JSON Patch (or
    a merge patch), or a Parameters resource (FHIRPath Patch)."""
    if not isinstance(resource, dict):
        raise BadRequest("A PATCH entry needs a Binary or Parameters resource")
    if resource.get("resourceType") == "Parameters":
        return Patch("fhirpath-patch", resource)
    if resource.get("resourceType") != "Binary":
        raise BadRequest(
            f"A PATCH entry carries a Binary or Parameters, not {resource.get('resourceType')!r}"
        )
    ctype = str(resource.get("contentType", "")).split(";")[0].strip().lower()
    if ctype not in (JSON_PATCH, MERGE_PATCH):
        raise BadRequest(
            f"A PATCH Binary must be {JSON_PATCH} or {MERGE_PATCH}, not {ctype!r}",
            expression=["Binary.contentType"],
        )
    try:
        body = jsonio.parse_json(base64.b64decode(resource.get("data") or "", validate=True))
    except (ValueError, binascii.Error, BadRequest) as exc:
        detail = f" ({exc.diagnostics})" if isinstance(exc, BadRequest) else ""
        raise BadRequest(
            f"The PATCH Binary's data is not base64-encoded JSON{detail}",
            expression=["Binary.data"],
        ) from exc
    return patch_of(ctype, body)


def apply_patch(resource: Resource, patch: Patch) -> Resource:
    """The patched copy of `resource` (BadRequest for a malformed patch, Unprocessable for
    one that does not apply, e.g. a path that matches nothing or a failed `test`)."""
    if patch.kind == "json-patch":
        out = _json_patch(resource, patch.body)
    elif patch.kind == "fhirpath-patch":
        out = _fhirpath_patch(resource, patch.body)
    else:
        out = _merge_patch(copy.deepcopy(resource), patch.body)
    if not isinstance(out, dict):
        raise Unprocessable("The patch does not leave a resource")
    for key in ("resourceType", "id"):
        if out.get(key) != resource.get(key):
            raise Unprocessable(f"A patch cannot change the resource's {key}", expression=[key])
    return out


# ---- JSON Patch -----------------------------------------------------------------------------


def _json_patch(resource: Resource, ops: list[Any]) -> Any:
    try:
        return jsonpatch.JsonPatch(ops).apply(resource, in_place=False)
    except jsonpatch.InvalidJsonPatch as exc:
        raise BadRequest(f"Invalid JSON Patch: {exc}") from exc
    except jsonpatch.JsonPatchTestFailed as exc:
        raise Unprocessable(f"JSON Patch test failed: {exc}", code="processing") from exc
    except (jsonpatch.JsonPatchConflict, jsonpointer.JsonPointerException) as exc:
        raise Unprocessable(f"JSON Patch does not apply: {exc}", code="processing") from exc
    except (TypeError, KeyError, AttributeError) as exc:  # e.g. an op that is not an object
        raise BadRequest(f"Invalid JSON Patch operation: {exc}") from exc


# ---- JSON Merge Patch (RFC 7386 section 2) -----------------------------------------------


def _merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if not isinstance(target, dict):
        target = {}
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        else:
            target[key] = _merge_patch(target.get(key), value)
    return target


# ---- FHIRPath Patch -------------------------------------------------------------------------

_STEP = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:\[(?P<index>\d+)\])?$")
_TAIL = re.compile(r"^(?P<parent>.+)\.(?P<name>[A-Za-z][A-Za-z0-9]*)$")
_OPERATION_PARTS = {"type", "path", "name", "value", "index", "source", "destination"}


def _fhirpath_patch(resource: Resource, parameters: Resource) -> Resource:
    check_parameters_shape(parameters)
    out = copy.deepcopy(resource)
    operations = parameters.get("parameter") or []  # none: a valid patch that changes nothing
    if not isinstance(operations, list):
        raise BadRequest("Parameters.parameter must be an array of operations")
    for i, param in enumerate(operations):
        where = f"Parameters.parameter[{i}]"
        if not isinstance(param, dict) or param.get("name") != "operation":
            raise BadRequest(f"{where} is not an 'operation'", expression=[where])
        try:
            _apply_operation(out, _operation_parts(param, where))
        except FhirError as exc:
            exc.diagnostics = f"{where}: {exc.diagnostics}"
            raise
    return _without_empty(out)


def _without_empty(node: Any) -> Any:
    """FHIR JSON has no empty objects or arrays: a delete that empties an element's parent
    (`Patient.contact[0].name.text`) removes the parent too."""
    if isinstance(node, dict):
        kept = {k: _without_empty(v) for k, v in node.items()}
        return {k: v for k, v in kept.items() if v not in ({}, [])}
    if isinstance(node, list):
        kept_items = [_without_empty(v) for v in node]
        return [v for v in kept_items if v not in ({}, [])]
    return node


def _operation_parts(param: Resource, where: str) -> dict[str, Any]:
    parts: dict[str, Any] = {}
    for part in param.get("part") or []:
        name = part.get("name") if isinstance(part, dict) else None
        if name not in _OPERATION_PARTS:
            raise BadRequest(f"{where}: unknown operation part {name!r}", expression=[where])
        if name in parts:
            raise BadRequest(f"{where}: part {name!r} is given twice", expression=[where])
        parts[name] = _part_value(part) if name == "value" else _primitive(part)
    for required in ("type", "path"):
        if not isinstance(parts.get(required), str):
            raise BadRequest(f"{where}: the operation needs a '{required}'", expression=[where])
    return parts


def _primitive(part: Resource) -> Any:
    values = [v for k, v in part.items() if k.startswith("value")]
    return values[0] if values else None


def _part_value(part: Resource) -> Any:
    """A value part: value[x], a resource, or nested parts making a complex value."""
    if "resource" in part:
        return part["resource"]
    values = [v for k, v in part.items() if k.startswith("value")]
    if values:
        return values[0]
    nested = part.get("part")
    if not isinstance(nested, list) or not nested:
        raise BadRequest("An operation's 'value' has neither value[x] nor parts")
    obj: dict[str, Any] = {}
    for sub in nested:
        name = sub.get("name") if isinstance(sub, dict) else None
        if not isinstance(name, str):
            raise BadRequest("A value part has no name")
        value = _part_value(sub)
        if name in obj:
            obj[name] = [*obj[name], value] if isinstance(obj[name], list) else [obj[name], value]
        else:
            obj[name] = value
    return obj


# FHIR element names that are FHIRPath keywords (`Narrative.div`, `ValueSet.expansion.contains`)
# must be delimited to parse as names; `.contains(` stays the function.
_KEYWORD_STEP = re.compile(r"\.(div|contains|and|or|xor|implies|is|as|in|mod)(?=$|[.\[\s])")


def _quote_keywords(path: str) -> str:
    return _KEYWORD_STEP.sub(lambda m: f".`{m[1]}`", path)


@dataclass
class _Slot:
    """Where a FHIRPath result lives: `container[key]`, or `container[key][index]`."""

    container: dict[str, Any]
    key: str
    index: int | None


def _locate(resource: Resource, path: str) -> list[_Slot | None]:
    """The locations of what `path` selects (None for the resource itself)."""
    try:
        nodes = evaluate(resource, _quote_keywords(path), {}, models["r4"], {"returnRawData": True})
    except Exception as exc:  # fhirpathpy raises plain exceptions for syntax errors
        raise BadRequest(f"Invalid FHIRPath {path!r}: {exc}", code="invalid") from exc
    slots: list[_Slot | None] = []
    for node in nodes:
        prop = getattr(node, "propName", None)
        if prop is None:
            if getattr(node, "data", None) is resource:
                slots.append(None)
                continue
            raise Unprocessable(f"{path!r} selects a computed value, not an element")
        slots.append(_slot(resource, prop, path))
    return slots


def _slot(resource: Resource, prop: str, path: str) -> _Slot:
    steps = prop.split(".")[1:]  # drop the resource type
    node: Any = resource
    slot: _Slot | None = None
    for step in steps:
        m = _STEP.match(step)
        if m is None or not isinstance(node, dict):
            raise Unprocessable(f"{path!r} selects {prop}, which cannot be patched")
        key = _actual_key(node, m["name"])
        index = int(m["index"]) if m["index"] is not None else None
        slot = _Slot(node, key, index)
        node = node[key] if index is None else node[key][index]
    if slot is None:
        raise Unprocessable(f"{path!r} selects the resource itself")
    return slot


def _actual_key(node: dict[str, Any], name: str) -> str:
    """`deceased` -> `deceasedBoolean`: the key a choice element has in JSON."""
    if name in node:
        return name
    for key in node:
        if key.startswith(name) and key[len(name) : len(name) + 1].isupper():
            return key
    raise Unprocessable(f"No element {name!r} here")


def _read(slot: _Slot) -> Any:
    value = slot.container[slot.key]
    return value if slot.index is None else value[slot.index]


def _write(slot: _Slot, value: Any) -> None:
    if slot.index is None:
        slot.container[slot.key] = value
    else:
        slot.container[slot.key][slot.index] = value


def _remove(slot: _Slot) -> None:
    shadow = f"_{slot.key}"
    if slot.index is None:
        del slot.container[slot.key]
        slot.container.pop(shadow, None)
        return
    del slot.container[slot.key][slot.index]
    if isinstance(slot.container.get(shadow), list) and len(slot.container[shadow]) > slot.index:
        del slot.container[shadow][slot.index]
    if not slot.container[slot.key]:
        del slot.container[slot.key]
        slot.container.pop(shadow, None)


def _one(resource: Resource, path: str, what: str) -> _Slot | None:
    slots = _locate(resource, path)
    if len(slots) != 1:
        raise Unprocessable(f"{what} path {path!r} must select one element, not {len(slots)}")
    return slots[0]


def _container(resource: Resource, path: str, what: str) -> dict[str, Any]:
    slot = _one(resource, path, what)
    target = resource if slot is None else _read(slot)
    if not isinstance(target, dict):
        raise Unprocessable(f"{what} path {path!r} selects a primitive, not an element")
    return target


def _list_at(resource: Resource, path: str, what: str) -> tuple[dict[str, Any], str]:
    """The element holding the list a path names (`Patient.identifier`) and its key."""
    m = _TAIL.match(path.strip())  # e.g. Patient.name[0].given -> Patient.name[0], given
    if m is None:
        raise BadRequest(f"{what} path {path!r} must end with an element name")
    return _container(resource, m["parent"], what), m["name"]


def _index(value: Any, what: str, upper: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= upper:
        raise Unprocessable(f"{what} {value!r} is out of range 0..{upper}")
    return value


def _apply_operation(resource: Resource, op: dict[str, Any]) -> None:
    kind, path = op["type"], op["path"]
    if kind == "add":
        name = op.get("name")
        if not isinstance(name, str) or "value" not in op:
            raise BadRequest("add needs a 'name' and a 'value'")
        _add(resource, _container(resource, path, "add"), name, op["value"])
    elif kind == "insert":
        if "value" not in op:
            raise BadRequest("insert needs a 'value'")
        container, key = _list_at(resource, path, "insert")
        items = container.get(key, [])
        if not isinstance(items, list):
            raise Unprocessable(f"{path!r} is not a list")
        items.insert(_index(op.get("index"), "index", len(items)), op["value"])
        container[key] = items
    elif kind == "delete":
        slots = _locate(resource, path)
        if len(slots) > 1:
            raise Unprocessable(f"delete path {path!r} selects {len(slots)} elements, not one")
        if slots and slots[0] is None:
            raise Unprocessable("delete cannot remove the resource itself")
        if slots:
            _remove(slots[0])  # type: ignore[arg-type]
    elif kind == "replace":
        if "value" not in op:
            raise BadRequest("replace needs a 'value'")
        slot = _one(resource, path, "replace")
        if slot is None:
            raise Unprocessable("replace cannot replace the resource itself")
        _write(slot, op["value"])
    elif kind == "move":
        container, key = _list_at(resource, path, "move")
        items = container.get(key)
        if not isinstance(items, list) or not items:
            raise Unprocessable(f"move path {path!r} selects no list")
        source = _index(op.get("source"), "source", len(items) - 1)
        destination = _index(op.get("destination"), "destination", len(items) - 1)
        items.insert(destination, items.pop(source))
    else:
        raise BadRequest(f"Unknown FHIRPath Patch operation type {kind!r}")


def _add(resource: Resource, container: dict[str, Any], name: str, value: Any) -> None:
    """Append to a list element, or set a single one that is absent (FHIR decides which:
    the element's cardinality is read from the R4 model by validating both shapes)."""
    current = container.get(name)
    if isinstance(current, list):
        current.append(value)
        return
    if current is not None:
        raise Unprocessable(f"add: {name!r} already has a value (use replace)")
    container[name] = [value]
    if _valid(resource):
        return
    container[name] = value
    if not _valid(resource):
        container[name] = [value]  # neither shape validates: validation will say why


def _valid(resource: Resource) -> bool:
    try:
        validate_resource(resource)
    except FhirError:
        return False
    return True
