"""Transaction and batch Bundles.

A transaction is all-or-nothing and is ONE store commit: every entry is resolved and
validated first (conditional creates and updates, `urn:uuid:` references rewritten to the
assigned ids), then the writes are committed together. A batch runs each entry on its own.
"""

from __future__ import annotations

import copy
import urllib.parse
from dataclasses import dataclass
from typing import Any

from fhircare.fhir.bundle_shape import check_bundle_shape
from fhircare.fhir.errors import (
    BadRequest,
    FhirError,
    Forbidden,
    NotFound,
    PreconditionFailed,
    Unprocessable,
)
from fhircare.fhir.meta import without_server_meta
from fhircare.fhir.references import rewrite_references
from fhircare.fhir.search import parse_query
from fhircare.fhir.validation import check_id, check_type
from fhircare.services.patching import apply_patch, patch_in_bundle
from fhircare.services.resources import (
    ResourceService,
    entry_error,
    parse_etag,
    parse_query_string,
)
from fhircare.services.searching import Paging, history_bundle, search_bundle
from fhircare.store.base import WriteOp, new_id

STATUS_TEXT = {200: "200 OK", 201: "201 Created", 204: "204 No Content"}
# Transaction processing order (FHIR R4 http.html#trules): DELETE, POST, PUT, then reads.
# PATCH goes with PUT (both update an existing resource).
ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}


@dataclass
class _Planned:
    index: int
    method: str
    resource_type: str
    id: str | None = None
    resource: dict[str, Any] | None = None
    if_match: str | None = None
    existing: dict[str, Any] | None = None  # conditional create that matched
    status: int = 200
    matched: tuple[str, ...] = ()  # ids a conditional DELETE matched (all are deleted)

    def deletes(self) -> tuple[str, ...]:
        """The ids a DELETE entry removes: its own, or every match of its criteria."""
        return (self.id,) if self.id is not None else self.matched


def _conditional(entry: Any) -> bool:
    """Whether a Bundle entry's write depends on a search (ifNoneExist or `Type?criteria`)."""
    request = entry.get("request") if isinstance(entry, dict) else None
    if not isinstance(request, dict) or request.get("method") in ("GET", "HEAD"):
        return False
    return bool(request.get("ifNoneExist")) or "?" in str(request.get("url") or "")


def _split_url(url: str, base_url: str) -> tuple[str, str]:
    """'Patient/1?x=y' or absolute -> ('Patient/1', 'x=y')."""
    if url.startswith(base_url.rstrip("/") + "/"):
        url = url[len(base_url.rstrip("/")) + 1 :]
    url = url.lstrip("/")
    path, _, query = url.partition("?")
    return path, query


class BundleProcessor:
    def __init__(
        self,
        svc: ResourceService,
        *,
        base_url: str,
        paging: Paging = Paging(),
        max_entries: int = 5000,
    ) -> None:
        self.svc = svc
        self.base_url = base_url.rstrip("/")
        self.paging = paging
        self.max_entries = max_entries

    def scoped(self, svc: ResourceService) -> BundleProcessor:
        """The same processor working through another (a caller's scoped) service."""
        return BundleProcessor(
            svc, base_url=self.base_url, paging=self.paging, max_entries=self.max_entries
        )

    def process(self, bundle: Any, *, representation: bool = False) -> dict[str, Any]:
        entries = check_bundle_shape(bundle, self.max_entries)
        if bundle["type"] == "transaction":
            return self.transaction(entries, representation=representation)
        return self.batch(entries, representation=representation)

    # ---- transaction ---------------------------------------------------------------------------

    def transaction(
        self, entries: list[dict[str, Any]], *, representation: bool = False
    ) -> dict[str, Any]:
        """All entries or none; one with a condition (ifNoneExist, a conditional URL) makes
        the transaction hold the service's conditional lock from its searches to its commit."""
        if any(_conditional(entry) for entry in entries):
            with self.svc.conditional:
                return self._transaction(entries, representation=representation)
        return self._transaction(entries, representation=representation)

    def _transaction(
        self, entries: list[dict[str, Any]], *, representation: bool = False
    ) -> dict[str, Any]:
        planned: list[_Planned] = []
        ids: dict[str, str] = {}  # fullUrl -> "Type/id"
        targets: set[str] = set()
        for i, entry in enumerate(entries):
            try:
                plan = self._plan(i, entry, ids)
            except FhirError as exc:
                raise entry_error(i, exc) from exc
            if plan.method in ("POST", "PUT", "PATCH", "DELETE") and plan.existing is None:
                ids_written = plan.deletes() if plan.method == "DELETE" else (plan.id,)
                for rid in ids_written:
                    target = f"{plan.resource_type}/{rid}"
                    if target in targets:
                        raise BadRequest(f"Bundle.entry[{i}]: {target} is written twice")
                    targets.add(target)
            planned.append(plan)

        def mapping(ref: str) -> str | None:
            if ref in ids:
                return ids[ref]
            if ref.startswith("urn:uuid:") or ref.startswith("urn:oid:"):
                raise BadRequest(f"Reference {ref} matches no fullUrl in the transaction")
            return None

        pending = set(targets)
        ops: list[WriteOp] = []
        entry_of: list[int] = []  # the Bundle entry of each op
        for plan in sorted(planned, key=lambda p: ORDER[p.method]):
            if plan.method in ("POST", "PUT", "PATCH") and plan.existing is None:
                assert plan.resource is not None
                try:
                    rewrite_references(plan.resource, mapping)
                    if plan.method != "PUT" or "id" not in plan.resource:
                        plan.resource["id"] = plan.id  # a PUT's own id must match (prepare)
                    data = self.svc.prepare(
                        plan.resource,
                        resource_type=plan.resource_type,
                        id=plan.id,
                        pending=pending,
                    )
                except BadRequest as exc:
                    if plan.method == "PATCH":  # the patch made the resource invalid
                        exc = Unprocessable(exc.diagnostics, expression=exc.expression)
                    raise entry_error(plan.index, exc) from exc
                except FhirError as exc:
                    raise entry_error(plan.index, exc) from exc
                exists = self.svc.store.current_version(plan.resource_type, plan.id or "")
                method = "create" if plan.method == "POST" else "update"
                ops.append(
                    WriteOp(
                        method,
                        plan.resource_type,
                        id=plan.id,
                        resource=data,
                        if_match=plan.if_match,
                        keep_id=True,
                    )
                )
                plan.status = 201 if (plan.method == "POST" or exists is None) else 200
                entry_of.append(plan.index)
            elif plan.method == "DELETE":
                for rid in plan.deletes():
                    ops.append(
                        WriteOp("delete", plan.resource_type, id=rid, if_match=plan.if_match)
                    )
                    entry_of.append(plan.index)
        try:
            committed = self.svc.commit_prepared(ops) if ops else []
        except Forbidden as exc:  # the access gate refused one op: name its entry
            index = getattr(exc, "op_index", None)
            if isinstance(index, int) and 0 <= index < len(entry_of):
                raise entry_error(entry_of[index], exc) from exc
            raise
        results = {(r.resource_type, r.id): r for r in committed}

        out_entries: list[dict[str, Any]] = []
        for plan in planned:
            if plan.method in ("GET", "HEAD"):
                out_entries.append(self._get(entries[plan.index]))
                continue
            response: dict[str, Any] = {}
            entry: dict[str, Any] = {"response": response}
            if plan.existing is not None:
                response["status"] = "200 OK"
                response["location"] = (
                    f"{plan.resource_type}/{plan.existing['id']}/_history/"
                    f"{plan.existing['meta']['versionId']}"
                )
                response["etag"] = f'W/"{plan.existing["meta"]["versionId"]}"'
                if representation:
                    entry["resource"] = plan.existing
            elif plan.method == "DELETE":
                response["status"] = "204 No Content"
            else:
                result = results[(plan.resource_type, plan.id or "")]
                response["status"] = STATUS_TEXT[201 if result.created else 200]
                response["location"] = (
                    f"{plan.resource_type}/{result.id}/_history/{result.version_id}"
                )
                response["etag"] = f'W/"{result.version_id}"'
                response["lastModified"] = result.last_updated
                if representation:
                    entry["resource"] = result.resource
            entry["fullUrl"] = (
                f"{self.base_url}/{plan.resource_type}/{plan.id or (plan.existing or {}).get('id')}"
                if plan.method != "DELETE"
                else None
            )
            if entry["fullUrl"] is None:
                del entry["fullUrl"]
            out_entries.append(entry)
        return {"resourceType": "Bundle", "type": "transaction-response", "entry": out_entries}

    def _plan(self, i: int, entry: dict[str, Any], ids: dict[str, str]) -> _Planned:
        request = entry["request"]
        method = request["method"]
        path, query = _split_url(request["url"], self.base_url)
        parts = path.split("/")
        if method in ("GET", "HEAD"):
            # checked now: a read that cannot succeed fails the transaction before any write
            check_type(parts[0])
            if len(parts) == 1:
                parse_query(parts[0], urllib.parse.parse_qsl(query, keep_blank_values=True))
            elif len(parts) >= 2:
                check_id(parts[1])
            return _Planned(i, method, parts[0])
        rtype = parts[0]
        check_type(rtype)
        full_url = entry.get("fullUrl")
        resource = copy.deepcopy(entry.get("resource")) if entry.get("resource") else None
        if method != "PATCH" and resource is not None and resource.get("resourceType") != rtype:
            raise BadRequest(
                f"request.url type {rtype} does not match resourceType "
                f"{resource.get('resourceType')}"
            )
        if_match = parse_etag(request.get("ifMatch"))
        if method == "POST":
            if len(parts) != 1:
                raise BadRequest(f"POST url must be a resource type, not {request['url']!r}")
            if request.get("ifNoneExist"):
                existing = self.svc.find_one(rtype, request["ifNoneExist"].split("?", 1)[-1])
                if existing is not None:
                    if full_url:
                        ids[full_url] = f"{rtype}/{existing['id']}"
                    return _Planned(i, method, rtype, existing["id"], existing=existing)
            rid = new_id()
            if full_url:
                ids[full_url] = f"{rtype}/{rid}"
            return _Planned(i, method, rtype, rid, resource)
        if method == "PATCH":
            plan = self._plan_patch(request, rtype, parts, query, if_match, entry.get("resource"))
            plan.index = i
            if full_url:
                ids[full_url] = f"{rtype}/{plan.id}"
            return plan
        if method == "PUT":
            if len(parts) == 2:
                check_id(parts[1])
                rid = parts[1]
            elif len(parts) == 1 and query:
                existing = self.svc.find_one(rtype, query)
                rid = existing["id"] if existing else (resource or {}).get("id") or new_id()
            else:
                raise BadRequest(f"PUT url must be Type/id or Type?query, not {request['url']!r}")
            if full_url:
                ids[full_url] = f"{rtype}/{rid}"
            return _Planned(i, method, rtype, rid, resource, if_match=if_match)
        # DELETE
        if len(parts) == 2:
            check_id(parts[1])
            return _Planned(i, method, rtype, parts[1], if_match=if_match)
        if len(parts) == 1 and query:
            # every match is deleted, as a conditional DELETE outside a Bundle does
            # (CapabilityStatement conditionalDelete: multiple)
            params = parse_query_string(query)
            if not params:
                raise BadRequest(f"Empty conditional query for {rtype}")
            found = self.svc.search(rtype, params)
            return _Planned(i, method, rtype, matched=tuple(r["id"] for r in found))
        raise BadRequest(f"DELETE url must be Type/id or Type?query, not {request['url']!r}")

    def _plan_patch(
        self,
        request: dict[str, Any],
        rtype: str,
        parts: list[str],
        query: str,
        if_match: str | None,
        body: Any,
    ) -> _Planned:
        """A PATCH entry becomes an update of the version it applies to (If-Match that
        version, so a concurrent write fails the transaction instead of being lost)."""
        if len(parts) == 2:
            check_id(parts[1])
            rid = parts[1]
        elif len(parts) == 1 and query:
            rid = self.svc.conditional_patch_target(rtype, query)
        else:
            raise BadRequest(f"PATCH url must be Type/id or Type?query, not {request['url']!r}")
        current = self.svc.read(rtype, rid)
        vid = current["meta"]["versionId"]
        if if_match is not None and if_match != vid:
            raise PreconditionFailed(f"{rtype}/{rid} is at version {vid}, not {if_match}")
        patched = apply_patch(without_server_meta(current), patch_in_bundle(body))
        return _Planned(-1, "PATCH", rtype, rid, patched, if_match=vid)

    # ---- batch ---------------------------------------------------------------------------------

    def batch(self, entries: list[dict[str, Any]], *, representation: bool = False) -> dict:
        out = []
        for i, entry in enumerate(entries):
            try:
                out.append(self._batch_entry(entry, representation))
            except FhirError as exc:
                exc = entry_error(i, exc)
                out.append({"response": {"status": f"{exc.status}", "outcome": exc.outcome()}})
        return {"resourceType": "Bundle", "type": "batch-response", "entry": out}

    def _batch_entry(self, entry: dict[str, Any], representation: bool) -> dict[str, Any]:
        request = entry["request"]
        method = request["method"]
        if method in ("GET", "HEAD"):
            return self._get(entry)
        path, query = _split_url(request["url"], self.base_url)
        parts = path.split("/")
        rtype = parts[0]
        check_type(rtype)
        if_match = parse_etag(request.get("ifMatch"))
        resource = entry.get("resource")
        if method == "POST":
            outcome = self.svc.create(resource, if_none_exist=request.get("ifNoneExist"))
        elif method == "PUT" and len(parts) == 2:
            outcome = self.svc.update(rtype, parts[1], resource, if_match=if_match)
        elif method == "PUT" and query:
            outcome = self.svc.conditional_update(rtype, query, resource, if_match=if_match)
        elif method == "PATCH" and (len(parts) == 2 or query):
            rid = parts[1] if len(parts) == 2 else self.svc.conditional_patch_target(rtype, query)
            outcome = self.svc.patch(rtype, rid, patch_in_bundle(resource), if_match=if_match)
        elif method == "DELETE" and len(parts) == 2:
            outcome = self.svc.delete(rtype, parts[1], if_match=if_match)
        elif method == "DELETE" and query:
            outcome = self.svc.conditional_delete(rtype, query)
        else:
            raise BadRequest(f"Unsupported request {method} {request['url']}")
        response: dict[str, Any] = {"status": STATUS_TEXT.get(outcome.status, str(outcome.status))}
        result: dict[str, Any] = {"response": response}
        res = outcome.resource
        if res is not None:
            vid = res["meta"]["versionId"]
            response["location"] = f"{rtype}/{res['id']}/_history/{vid}"
            response["etag"] = f'W/"{vid}"'
            response["lastModified"] = res["meta"]["lastUpdated"]
            result["fullUrl"] = f"{self.base_url}/{rtype}/{res['id']}"
            if representation:
                result["resource"] = res
        return result

    # ---- reads inside Bundles ------------------------------------------------------------------

    def _get(self, entry: dict[str, Any]) -> dict[str, Any]:
        path, query = _split_url(entry["request"]["url"], self.base_url)
        params = urllib.parse.parse_qsl(query, keep_blank_values=True)
        parts = [p for p in path.split("/") if p]
        try:
            if len(parts) == 1:
                check_type(parts[0])
                body = search_bundle(
                    self.svc, parts[0], params, base_url=self.base_url, paging=self.paging
                )
            elif len(parts) == 2:
                body = self.svc.read(parts[0], parts[1])
            elif len(parts) == 3 and parts[2] == "_history":
                body = history_bundle(
                    self.svc.store.history(parts[0], parts[1]),
                    params,
                    base_url=self.base_url,
                    path=path,
                    paging=self.paging,
                )
            elif len(parts) == 4 and parts[2] == "_history":
                body = self.svc.vread(parts[0], parts[1], parts[3])
            else:
                raise NotFound(f"Unsupported read {entry['request']['url']}")
        except FhirError as exc:
            return {"response": {"status": str(exc.status), "outcome": exc.outcome()}}
        response: dict[str, Any] = {"status": "200 OK"}
        if body.get("meta", {}).get("versionId"):
            response["etag"] = f'W/"{body["meta"]["versionId"]}"'
        return {"resource": body, "response": response}
