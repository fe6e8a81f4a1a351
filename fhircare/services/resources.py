"""The FHIR resource service: validated, conditional, versioned writes and searches.

Edges (REST API, HL7 v2 intake, CLI) call this; it validates bodies, resolves conditional
operations, checks references, commits through the Store in one atomic commit, then
publishes the written resources on the bus.
"""

from __future__ import annotations

import re
import threading
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from fhircare.fhir.errors import (
    BadRequest,
    Conflict,
    FhirError,
    NotFound,
    PreconditionFailed,
    Unprocessable,
)
from fhircare.fhir.meta import without_server_meta
from fhircare.fhir.profiles import check_claimed_profiles
from fhircare.fhir.references import iter_references, parse_local
from fhircare.fhir.validation import check_id, check_type, is_resource_type, validate_resource
from fhircare.services.bus import MessageBus
from fhircare.services.patching import Patch, apply_patch
from fhircare.store.base import Store, WriteOp, WriteResult


def parse_query_string(query: str) -> list[tuple[str, str]]:
    """'a=1&b=x%7Cy' -> [('a', '1'), ('b', 'x|y')]."""
    return urllib.parse.parse_qsl(query, keep_blank_values=True)


def parse_etag(value: str | None) -> str | None:
    """'W/"3"' or '3' -> '3'."""
    if value is None:
        return None
    v = value.strip()
    if v.startswith("W/"):
        v = v[2:]
    return v.strip('"') or None


@dataclass
class Outcome:
    """What a write did: the resource, its HTTP status and headers."""

    resource: dict[str, Any] | None
    status: int
    result: WriteResult | None = None
    headers: dict[str, str] = field(default_factory=dict)


class ResourceService:
    """Reads, searches and writes through `store`; `scoped(view)` gives the same service
    bound to a caller's gated view (`fhircare.security.gate.GatedStore`)."""

    def __init__(
        self,
        store: Store,
        bus: MessageBus | None = None,
        *,
        check_references: bool = True,
        system_store: Store | None = None,
        conditional_lock: Any = None,
    ) -> None:
        self.store = store
        self.bus = bus or MessageBus()
        self.check_references = check_references
        # A conditional write reads (is there a match?), decides and commits; two of them at
        # once would both see no match and both create (two Patients for one identifier).
        # They hold this lock from the search to the commit, one at a time in this process
        # (the one that owns the embedded store); scoped services share it. A store shared
        # by several worker processes offers its own lock over all of them (`conditional`).
        self.conditional: Any = (
            conditional_lock or getattr(store, "conditional", None) or threading.RLock()
        )
        # validation (references, the version replaced, domain checks) and bus reactions
        # are the server's own work: they see the whole store, and return no data
        self._system = system_store or store

    def scoped(self, view: Store) -> ResourceService:
        """This service with every read, search, match and write going through `view`."""
        return ResourceService(
            view,
            self.bus,
            check_references=self.check_references,
            system_store=self._system,
            conditional_lock=self.conditional,
        )

    def publish(self, written: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Publish what a domain service committed (bus reactions run as the server);
        returns what the reactions wrote."""
        return self.bus.publish(self._system, written) if written else []

    # ---- reads ------------------------------------------------------------------------------

    def read(self, resource_type: str, id: str) -> dict[str, Any]:
        check_type(resource_type)
        check_id(id)
        return self.store.read(resource_type, id)

    def vread(self, resource_type: str, id: str, vid: str) -> dict[str, Any]:
        check_type(resource_type)
        check_id(id)
        return self.store.vread(resource_type, id, vid)

    def search(self, resource_type: str, params: list[tuple[str, str]]) -> list[dict[str, Any]]:
        check_type(resource_type)
        return self.store.search(resource_type, params)

    def find_one(self, resource_type: str, query: str) -> dict[str, Any] | None:
        """The single match of a conditional query; None for none; 412 for several."""
        params = parse_query_string(query)
        if not params:
            raise BadRequest(f"Empty conditional query for {resource_type}")
        found = self.search(resource_type, params)
        if len(found) > 1:
            raise PreconditionFailed(
                f"Conditional query {resource_type}?{query} matched {len(found)} resources",
                code="multiple-matches",
            )
        return found[0] if found else None

    # ---- write preparation -----------------------------------------------------------------

    def prepare(
        self,
        resource: Any,
        *,
        resource_type: str | None = None,
        id: str | None = None,
        pending: set[str] | None = None,
        validated: bool = False,
    ) -> dict[str, Any]:
        """Validate structure, ids and references, and run the domain checks (`validated`:
        the structure was checked already, by the caller)."""
        data = resource if validated else validate_resource(resource, resource_type)
        rtype = data["resourceType"]
        check_type(rtype)
        if id is not None:
            check_id(id)
            if "id" in data and data["id"] != id:
                raise BadRequest(
                    f"The resource id '{data['id']}' does not match the URL id '{id}'",
                    expression=[f"{rtype}.id"],
                )
        if self.check_references:
            own = {f"{rtype}/{id}"} if id is not None else set()  # a self-reference resolves
            self._check_references(data, (pending or set()) | own)
        old = None
        if id is not None and self._system.exists(rtype, id):
            old = self._system.read(rtype, id)
        check_claimed_profiles(data)
        self.bus.run_checks(self._system, old, data)
        return data

    def _check_references(self, data: dict[str, Any], pending: set[str]) -> None:
        contained = {f"#{c.get('id')}" for c in data.get("contained") or [] if isinstance(c, dict)}
        for i, inner in enumerate(data.get("contained") or []):
            for path, ref in iter_references(inner):
                if ref["reference"].startswith("urn:"):
                    raise Unprocessable(
                        f"Unresolved reference {ref['reference']} in a contained resource: "
                        "urn references only resolve in a transaction",
                        expression=[f"{data['resourceType']}.contained[{i}].{path}"],
                    )
        for path, ref in iter_references(data):
            target = ref["reference"]
            if target.startswith("#"):
                if target != "#" and target not in contained:
                    raise Unprocessable(
                        f"Contained reference {target} has no contained resource",
                        expression=[f"{data['resourceType']}.{path}"],
                    )
                continue
            if target.startswith("urn:"):
                raise Unprocessable(
                    f"Unresolved reference {target}: urn references only resolve in a transaction",
                    expression=[f"{data['resourceType']}.{path}"],
                )
            local = parse_local(target)
            if local is None:
                if not _well_formed_reference(target):
                    raise Unprocessable(
                        f"Reference {target[:80]!r} is neither Type/id (of a FHIR resource "
                        "type), an absolute URL, a urn nor #id",
                        expression=[f"{data['resourceType']}.{path}.reference"],
                    )
                continue  # absolute reference to another server, or to a type not served here
            rtype, rid, vid = local
            if f"{rtype}/{rid}" in pending:
                continue
            if not self._system.exists(rtype, rid) or (
                vid is not None and not _version_exists(self._system, rtype, rid, vid)
            ):
                raise Unprocessable(
                    f"Reference {target} does not point to an existing resource",
                    expression=[f"{data['resourceType']}.{path}.reference"],
                    code="not-found",
                )

    # ---- writes -----------------------------------------------------------------------------

    def _commit(self, ops: list[WriteOp]) -> list[WriteResult]:
        results = self.store.commit(ops)
        self.publish([r.resource for r in results if r.resource is not None])
        return results

    def create(self, resource: Any, *, if_none_exist: str | None = None) -> Outcome:
        data = validate_resource(resource)
        rtype = data["resourceType"]
        check_type(rtype)
        if not if_none_exist:
            return self._create(rtype, data)
        with self.conditional:
            existing = self.find_one(rtype, if_none_exist.split("?", 1)[-1])
            if existing is not None:
                return Outcome(existing, 200)
            return self._create(rtype, data)

    def _create(self, rtype: str, data: dict[str, Any]) -> Outcome:
        # The server chooses the id of a create: a client's id is ignored (and not checked).
        body = self.prepare({k: v for k, v in data.items() if k != "id"}, validated=True)
        (result,) = self._commit([WriteOp("create", rtype, resource=body)])
        return Outcome(result.resource, 201, result)

    def update(
        self,
        resource_type: str,
        id: str,
        resource: Any,
        *,
        if_match: str | None = None,
    ) -> Outcome:
        check_type(resource_type)
        check_id(id)
        data = self.prepare(resource, resource_type=resource_type, id=id)
        (result,) = self._commit(
            [WriteOp("update", resource_type, id=id, resource=data, if_match=if_match)]
        )
        return Outcome(result.resource, 201 if result.created else 200, result)

    def conditional_update(
        self, resource_type: str, query: str, resource: Any, *, if_match: str | None = None
    ) -> Outcome:
        check_type(resource_type)
        with self.conditional:
            existing = self.find_one(resource_type, query)
            if existing is None:
                data = validate_resource(resource, resource_type)
                if data.get("id"):
                    return self.update(resource_type, data["id"], data, if_match=if_match)
                return self.create(data)
            return self.update(resource_type, existing["id"], resource, if_match=if_match)

    def patch(
        self,
        resource_type: str,
        id: str,
        patch: Patch,
        *,
        if_match: str | None = None,
    ) -> Outcome:
        """Apply a patch and write the result as an update of the version it was applied to.

        Validated like any update (an invalid result is a 422 and nothing changes). Without
        If-Match a concurrent write between read and commit makes the patch re-apply to the
        new version (a few times), so no write is lost; with If-Match it is a 412."""
        check_type(resource_type)
        check_id(id)
        for _attempt in range(5):
            # the version patched is checked with the result, at commit (update on both)
            current = self._system.read(resource_type, id)
            vid = current["meta"]["versionId"]
            if if_match is not None and if_match != vid:
                raise PreconditionFailed(
                    f"{resource_type}/{id} is at version {vid}, not {if_match}",
                    code="conflict",
                )
            result = apply_patch(without_server_meta(current), patch)
            try:
                data = self.prepare(result, resource_type=resource_type, id=id)
            except BadRequest as exc:  # the patch made a well-formed request invalid
                raise Unprocessable(exc.diagnostics, expression=exc.expression) from exc
            try:
                (written,) = self._commit(
                    [WriteOp("update", resource_type, id=id, resource=data, if_match=vid)]
                )
            except (PreconditionFailed, Conflict):
                if if_match is not None:
                    raise
                continue  # someone wrote in between: patch the new version
            return Outcome(written.resource, 200, written)
        raise Conflict(f"{resource_type}/{id} kept changing while it was patched; retry")

    def conditional_patch_target(self, resource_type: str, query: str) -> str:
        """The id PATCH [type]?criteria patches: the one match; none 404, several 412."""
        existing = self.find_one(resource_type, query)
        if existing is None:
            raise NotFound(f"No {resource_type} matches {query} (conditional patch)")
        return existing["id"]

    def delete(
        self, resource_type: str, id: str, *, if_match: str | None = None, cascade: bool = False
    ) -> Outcome:
        """Delete; `cascade` also deletes what references it (in the same commit)."""
        check_type(resource_type)
        check_id(id)
        op = WriteOp("delete", resource_type, id=id, if_match=if_match, cascade=cascade)
        result = self._commit([op])[0]
        return Outcome(None, 200 if result.version_id != "0" else 204, result)

    def conditional_delete(self, resource_type: str, query: str) -> Outcome:
        check_type(resource_type)
        params = parse_query_string(query)
        if not params:
            raise BadRequest("A conditional delete needs search parameters")
        with self.conditional:
            found = self.search(resource_type, params)
            if not found:
                return Outcome(None, 204)
            self._commit([WriteOp("delete", resource_type, id=r["id"]) for r in found])
        return Outcome(None, 200)

    def commit_prepared(self, ops: list[WriteOp]) -> list[WriteResult]:
        """Commit already prepared ops (transactions, domain services) and publish."""
        return self._commit(ops)


RELATIVE_REFERENCE = re.compile(
    r"^(?P<type>[A-Z][A-Za-z]+)/[A-Za-z0-9\-.]{1,64}(/_history/[A-Za-z0-9\-.]{1,64})?$"
)


def _well_formed_reference(target: str) -> bool:
    """An absolute URL, or a relative Type/id[/_history/vid] naming a FHIR resource type."""
    if "://" in target:
        return not any(c.isspace() for c in target)
    m = RELATIVE_REFERENCE.match(target)
    return m is not None and is_resource_type(m["type"])


def _version_exists(store: Store, resource_type: str, id: str, vid: str) -> bool:
    try:
        store.vread(resource_type, id, vid)
    except FhirError:
        return False
    return True


def entry_error(index: int, exc: FhirError) -> FhirError:
    """Prefix an error with the Bundle entry it came from."""
    exc.diagnostics = f"Bundle.entry[{index}]: {exc.diagnostics}"
    exc.expression = [
        e.replace(e.split(".")[0], f"Bundle.entry[{index}].resource", 1) for e in exc.expression
    ]
    return exc


__all__ = ["NotFound", "Outcome", "ResourceService", "entry_error", "parse_etag"]
