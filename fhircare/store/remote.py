"""The Store protocol backed by a remote FHIR server (HAPI) through `FhirClient`.

* `commit(ops)` is one transaction Bundle: all or nothing on the server. Creates with
  `keep_id` are PUTs with the client's id (so, unlike the embedded store, they do not fail
  when the id exists), other creates POSTs; `if_match` becomes `request.ifMatch: W/"n"`
  and a version conflict is raised as PreconditionFailed.
* Durable meta values (`get_meta`/`set_meta`) live in one Basic resource with the fixed
  id `fhircare-meta` (code `meta-store` in our own CodeSystem), one extension per key
  holding the JSON-encoded value; writes use If-Match and retry on a concurrent update.
* `changes()` is not offered: with a remote store the server is the system of record and
  there is nothing to sync; read the server's `_history` instead.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from typing import Any

from fhircare.fhir import registry
from fhircare.fhir.errors import Conflict, FhirError, Gone, NotFound, PreconditionFailed
from fhircare.fhir.search import CONTROL_PARAMS
from fhircare.remote.client import FhirClient, parse_etag, version_from_location
from fhircare.store.base import Change, SearchResult, WriteOp, WriteResult

META_ID = "fhircare-meta"
META_CODE_SYSTEM = "http://fhircare.org/fhir/CodeSystem/fhircare-internal"
META_EXTENSION = "http://fhircare.org/fhir/StructureDefinition/meta-value"
PAGE_SIZE = 500


class RemoteStore:
    """A FHIR server used as the store."""

    def __init__(self, client: FhirClient) -> None:
        self.client = client
        self.registry = registry.R4  # the server keeps (and indexes) its own SearchParameters

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

    def commit(self, ops: list[WriteOp]) -> list[WriteResult]:
        """Every op in one transaction Bundle; the server applies all or none."""
        if not ops:
            return []
        entries = [self._entry(op) for op in ops]
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
        try:
            response = self.client.transaction(bundle, prefer="return=representation")
        except Conflict as exc:
            # HAPI answers a failed ifMatch inside a transaction with 409 (HAPI-0989); the
            # Store contract calls that a failed precondition.
            if any(op.if_match is not None for op in ops):
                raise PreconditionFailed(exc.diagnostics) from exc
            raise
        return [
            self._result(op, entry, answer)
            for op, entry, answer in zip(ops, entries, response["entry"], strict=True)
        ]

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

    def _meta_resource(self) -> dict[str, Any] | None:
        try:
            return self.client.read("Basic", META_ID)
        except (NotFound, Gone):
            return None

    @staticmethod
    def _meta_values(resource: dict[str, Any] | None) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for ext in (resource or {}).get("extension") or []:
            if ext.get("url") != META_EXTENSION:
                continue
            parts = {e.get("url"): e.get("valueString") for e in ext.get("extension") or []}
            if parts.get("key") is not None and parts.get("value") is not None:
                values[parts["key"]] = json.loads(parts["value"])
        return values

    def get_meta(self, key: str, default: Any = None) -> Any:
        return self._meta_values(self._meta_resource()).get(key, default)

    def set_meta(self, key: str, value: Any) -> None:
        self.set_meta_many({key: value})

    def set_meta_many(self, values: dict[str, Any], attempts: int = 5) -> None:
        """Read-modify-write of the meta Basic resource, guarded by If-Match."""
        for _ in range(attempts):
            current = self._meta_resource()
            merged = {**self._meta_values(current), **values}
            resource = {
                "resourceType": "Basic",
                "id": META_ID,
                "code": {
                    "coding": [{"system": META_CODE_SYSTEM, "code": "meta-store"}],
                    "text": "fhircare durable key/value store",
                },
                "extension": [
                    {
                        "url": META_EXTENSION,
                        "extension": [
                            {"url": "key", "valueString": k},
                            {"url": "value", "valueString": json.dumps(v, sort_keys=True)},
                        ],
                    }
                    for k, v in sorted(merged.items())
                ],
            }
            version = (current or {}).get("meta", {}).get("versionId")
            try:
                self.client.update(resource, if_match=version)
                return
            except PreconditionFailed:
                continue
        raise FhirError("the meta store kept changing under concurrent writers", status=409)

    def close(self) -> None:
        self.client.close()
