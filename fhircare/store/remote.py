"""The Store protocol backed by a remote FHIR server (HAPI) through `FhirClient`.

* `commit(ops, meta=None)` is one transaction Bundle: all or nothing on the server, the
  `meta` values included. Creates with `keep_id` are PUTs with the client's id (so, unlike
  the embedded store, they do not fail when the id exists), other creates POSTs; `if_match`
  becomes `request.ifMatch: W/"n"` and a stale version (HAPI answers 409, FHIR says 412) is
  raised as PreconditionFailed. Without `if_match`, a 409 is a collision with a concurrent
  writer (the transaction was rolled back), so the commit is sent again, a few times.
* Durable meta values (`get_meta`/`set_meta`: processed markers, dedup keys) live in one
  Basic resource per key, with an id derived from the key (`fhircare-meta-<sha256>`, which
  HAPI accepts under any client id strategy), the key as its identifier and the JSON value
  in an extension. Writing a key is a plain PUT of its own resource: concurrent work on
  different keys never collides, and two writers of one key are retried on 409/412, last
  writer wins. A value from the older single `Basic/fhircare-meta` resource is still read
  when its key has no resource of its own.
* `changes()` is not offered: with a remote store the server is the system of record and
  there is nothing to sync; read the server's `_history` instead.
* Reads never come from HAPI's search cache (the client sends `Cache-Control: no-cache`).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable
from typing import Any

from fhircare.fhir import registry
from fhircare.fhir.errors import Conflict, Gone, NotFound, PreconditionFailed
from fhircare.fhir.search import CONTROL_PARAMS
from fhircare.remote.client import FhirClient, parse_etag, version_from_location
from fhircare.store.base import Change, SearchResult, WriteOp, WriteResult

META_ID_PREFIX = "fhircare-meta-"
LEGACY_META_ID = "fhircare-meta"
META_CODE_SYSTEM = "http://fhircare.org/fhir/CodeSystem/fhircare-internal"
META_KEY_SYSTEM = "http://fhircare.org/fhir/sid/meta-key"
META_EXTENSION = "http://fhircare.org/fhir/StructureDefinition/meta-value"
PAGE_SIZE = 500
# Attempts of a write that collides with a concurrent writer (HAPI: 409, or 412).
COLLISION_ATTEMPTS = 6
# How HAPI words a collision of two concurrent writers (409): "HAPI-0823: The operation has
# failed with a version constraint failure..." (HAPI-0825 for the same from another path).
COLLISION_MARKERS = ("HAPI-0823", "HAPI-0825", "version constraint failure")


def is_collision(exc: Conflict) -> bool:
    """A 409 caused by a concurrent writer (worth sending again), not a refusal such as a
    delete of a referenced resource."""
    return any(m in exc.diagnostics for m in COLLISION_MARKERS)


def meta_id(key: str) -> str:
    """The Basic id holding one meta key: letters included, 54 characters."""
    return META_ID_PREFIX + hashlib.sha256(key.encode()).hexdigest()[:40]


def meta_resource(key: str, value: Any) -> dict[str, Any]:
    """The Basic resource that stores one meta value."""
    return {
        "resourceType": "Basic",
        "id": meta_id(key),
        "identifier": [{"system": META_KEY_SYSTEM, "value": key}],
        "code": {
            "coding": [{"system": META_CODE_SYSTEM, "code": "meta-value"}],
            "text": "fhircare durable value",
        },
        "extension": [{"url": META_EXTENSION, "valueString": json.dumps(value, sort_keys=True)}],
    }


def _meta_entry(key: str, value: Any) -> dict[str, Any]:
    resource = meta_resource(key, value)
    return {
        "resource": resource,
        "request": {"method": "PUT", "url": f"Basic/{resource['id']}"},
    }


class RemoteStore:
    """A FHIR server used as the store."""

    def __init__(self, client: FhirClient) -> None:
        self.client = client
        self.registry = registry.R4  # the server keeps (and indexes) its own SearchParameters
        self._legacy: dict[str, Any] | None = None

    # ---- reads ------------------------------------------------------------------------------

    def read(self, resource_type: str, id: str) -> dict[str, Any]:
        return self.client.read(resource_type, id)

    def vread(self, resource_type: str, id: str, version_id: str) -> dict[str, Any]:
        return self.client.vread(resource_type, id, version_id)

    def exists(self, resource_type: str, id: str) -> bool:
        try:
            self.client.read(resource_type, id)
        except (NotFound, Gone):
            return False
        return True

    def current_version(self, resource_type: str, id: str) -> str | None:
        try:
            return (self.client.read(resource_type, id).get("meta") or {}).get("versionId")
        except NotFound:
            return None
        except Gone:
            for entry in self.client.history(resource_type, id, count=1):
                resp = entry.get("response") or {}
                return parse_etag(resp.get("etag")) or version_from_location(resp.get("location"))
            return None

    def search(self, resource_type: str, params: list[tuple[str, str]]) -> list[dict[str, Any]]:
        """Every match (all pages): paging, includes and summaries are the caller's job, as
        with the embedded store, so those parameters are not sent."""
        criteria = [(k, v) for k, v in params if k == "_sort" or k not in CONTROL_PARAMS]
        criteria.append(("_count", str(PAGE_SIZE)))
        return list(self.client.search(resource_type, criteria))

    def search_page(
        self,
        resource_type: str,
        params: list[tuple[str, str]],
        *,
        offset: int = 0,
        count: int | None = None,
    ) -> SearchResult:
        found = self.search(resource_type, params)
        end = None if count is None else offset + count
        return SearchResult(total=len(found), resources=found[offset:end])

    def iter_resources(self, resource_type: str) -> Iterable[dict[str, Any]]:
        return self.client.search(resource_type, [("_count", str(PAGE_SIZE))])

    def history(
        self,
        resource_type: str | None = None,
        id: str | None = None,
        since: str | None = None,
    ) -> list[dict[str, Any]]:
        return list(self.client.history(resource_type, id, since=since, count=PAGE_SIZE))

    # ---- writes -----------------------------------------------------------------------------

    def commit(self, ops: list[WriteOp], meta: dict[str, Any] | None = None) -> list[WriteResult]:
        """Every op, and the `meta` values, in one transaction Bundle: all or none."""
        if not ops and not meta:
            return []
        entries = [self._entry(op) for op in ops]
        meta_entries = [_meta_entry(k, v) for k, v in sorted((meta or {}).items())]
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries + meta_entries}
        guarded = any(op.if_match is not None for op in ops)
        response = self._send(bundle, guarded)
        return [
            self._result(op, entry, answer)
            for op, entry, answer in zip(ops, entries, response["entry"], strict=False)
        ]

    def _send(self, bundle: dict[str, Any], guarded: bool) -> dict[str, Any]:
        """POST the transaction; a collision with a concurrent writer is sent again (HAPI
        rolled it back: nothing was applied)."""
        policy = self.client.retry
        for attempt in range(1, COLLISION_ATTEMPTS + 1):
            try:
                return self.client.transaction(bundle, prefer="return=representation")
            except Conflict as exc:
                # HAPI answers a stale ifMatch inside a transaction with 409 (HAPI-0989); the
                # Store contract calls that a failed precondition, for the caller to re-read.
                if guarded:
                    raise PreconditionFailed(exc.diagnostics) from exc
                if attempt == COLLISION_ATTEMPTS or not is_collision(exc):
                    raise
                policy.sleep(policy.backoff(attempt))
        raise AssertionError("unreachable")

    @staticmethod
    def _entry(op: WriteOp) -> dict[str, Any]:
        rtype = op.resource_type
        request: dict[str, Any]
        entry: dict[str, Any] = {}
        if op.method == "delete":
            request = {"method": "DELETE", "url": f"{rtype}/{op.id}"}
        else:
            assert op.resource is not None
            resource = dict(op.resource, resourceType=rtype)
            if op.method == "create" and not (op.keep_id and op.id):
                resource.pop("id", None)
                entry["fullUrl"] = f"urn:uuid:{uuid.uuid4()}"
                request = {"method": "POST", "url": rtype}
            else:
                rid = op.id or resource.get("id")
                if not rid:
                    raise ValueError(f"{op.method} of {rtype} needs an id")
                resource["id"] = rid
                request = {"method": "PUT", "url": f"{rtype}/{rid}"}
            entry["resource"] = resource
        if op.if_match is not None:
            request["ifMatch"] = f'W/"{op.if_match}"'
        entry["request"] = request
        return entry

    @staticmethod
    def _result(op: WriteOp, sent: dict[str, Any], answer: dict[str, Any]) -> WriteResult:
        resp = answer.get("response") or {}
        resource = answer.get("resource")
        location = resp.get("location") or ""
        rid = op.id
        if location:
            parts = location.split("/_history/")[0].rstrip("/").split("/")
            rid = parts[-1]
        if isinstance(resource, dict) and resource.get("id"):
            rid = resource["id"]
        meta = (resource or {}).get("meta") or {}
        vid = meta.get("versionId") or parse_etag(resp.get("etag"))
        vid = vid or version_from_location(location) or ""
        return WriteResult(
            resource_type=op.resource_type,
            id=rid or "",
            version_id=vid,
            last_updated=meta.get("lastUpdated") or resp.get("lastModified") or "",
            created=str(resp.get("status", "")).startswith("201"),
            deleted=op.method == "delete",
            resource=resource if isinstance(resource, dict) else sent.get("resource"),
        )

    # ---- change log and meta ----------------------------------------------------------------

    def changes(self, after_seq: int, limit: int | None = None) -> list[Change]:
        raise NotImplementedError(
            "RemoteStore has no change log: the remote server is the system of record, so "
            "there is nothing to sync; read its _history instead"
        )

    def get_meta(self, key: str, default: Any = None) -> Any:
        try:
            resource = self.client.read("Basic", meta_id(key))
        except (NotFound, Gone):
            return self._legacy_meta().get(key, default)
        for ext in resource.get("extension") or []:
            if ext.get("url") == META_EXTENSION and isinstance(ext.get("valueString"), str):
                return json.loads(ext["valueString"])
        return default

    def set_meta(self, key: str, value: Any) -> None:
        self.set_meta_many({key: value})

    def set_meta_many(self, values: dict[str, Any]) -> None:
        """Write the values (one resource each) in one transaction; retried on collisions."""
        if not values:
            return
        entries = [_meta_entry(k, v) for k, v in sorted(values.items())]
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
        policy = self.client.retry
        for attempt in range(1, COLLISION_ATTEMPTS + 1):
            try:
                self.client.transaction(bundle, prefer="return=minimal")
                return
            except (Conflict, PreconditionFailed):
                if attempt == COLLISION_ATTEMPTS:
                    raise
                policy.sleep(policy.backoff(attempt))

    def _legacy_meta(self) -> dict[str, Any]:
        """Values of the single meta resource older versions kept (read once)."""
        if self._legacy is None:
            try:
                resource = self.client.read("Basic", LEGACY_META_ID)
            except (NotFound, Gone):
                resource = {}
            values: dict[str, Any] = {}
            for ext in resource.get("extension") or []:
                if ext.get("url") != META_EXTENSION:
                    continue
                parts = {e.get("url"): e.get("valueString") for e in ext.get("extension") or []}
                if parts.get("key") is not None and parts.get("value") is not None:
                    values[parts["key"]] = json.loads(parts["value"])
            self._legacy = values
        return self._legacy

    def close(self) -> None:
        self.client.close()
