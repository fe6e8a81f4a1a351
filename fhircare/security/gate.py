"""The one access gate: a `Store` view bound to the caller's access policy.

Built once per request (`fhircare.api.access.Access`), handed to the services, routes and
operations instead of the store itself. Every read, vread, search, count, include, history
entry, conditional match and write of the services passes here:

- reads and vreads check the version read (403 when the caller may not see it);
- searches carry the policy's restriction INTO the store query: one query per alternative
  (compartment link x scope query), unioned, so totals, `_summary=count`, paging and the
  matches of conditional operations count only what the caller may see. On the remote
  (HAPI) store each alternative is plain search parameters HAPI understands;
- history is filtered version by version;
- `commit` checks every `WriteOp` against the scopes (the new body, and for an update or a
  delete the stored version too), so an operation that writes a new type is covered
  without a list of types; written resources are audited from here.

`exists` and `current_version` answer for the whole store (reference checks and version
numbers need them); they return no data. With an unrestricted caller (``system/*.cruds``
or ``FHIRCARE_AUTH=none``) every call goes straight to the store.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from fhircare.fhir.errors import BadRequest, Forbidden
from fhircare.fhir.search import parse_query, sort_resources
from fhircare.fhir.search.query import Criterion, Has, InList
from fhircare.security.policy import AccessPolicy, Params
from fhircare.store.base import Change, SearchResult, Store, WriteOp, WriteResult

Resource = dict[str, Any]
WriteAudit = Callable[[str, Resource], None]
_ACTION = {"create": "C", "update": "U", "delete": "D"}


class GatedStore:
    """A `Store` that enforces one caller's `AccessPolicy` on everything passing through."""

    def __init__(
        self, store: Store, policy: AccessPolicy, *, on_write: WriteAudit | None = None
    ) -> None:
        self._store = store
        self.policy = policy
        self.memory_reads = bool(getattr(store, "memory_reads", False))
        self._open = policy.unrestricted
        self._on_write = on_write

    @property
    def registry(self) -> Any:
        """The store's search parameters (read through: a shared store catches up first)."""
        return self._store.registry

    # ---- reads ------------------------------------------------------------------------------

    def read(self, resource_type: str, id: str) -> Resource:
        resource = self._store.read(resource_type, id)
        if not self._open:
            self.policy.check_read(resource_type, "r", resource)
        return resource

    def vread(self, resource_type: str, id: str, version_id: str) -> Resource:
        resource = self._store.vread(resource_type, id, version_id)
        if not self._open:
            self.policy.check_read(resource_type, "r", resource)
        return resource

    def exists(self, resource_type: str, id: str) -> bool:
        return self._store.exists(resource_type, id)

    def current_version(self, resource_type: str, id: str) -> str | None:
        return self._store.current_version(resource_type, id)

    # ---- searches ---------------------------------------------------------------------------

    def search(self, resource_type: str, params: list[tuple[str, str]]) -> list[Resource]:
        return self.search_page(resource_type, params).resources

    def search_page(
        self,
        resource_type: str,
        params: list[tuple[str, str]],
        *,
        offset: int = 0,
        count: int | None = None,
    ) -> SearchResult:
        if self._open:
            return self._store.search_page(resource_type, params, offset=offset, count=count)
        alternatives = self.policy.searches(resource_type)
        self._check_reach(resource_type, params)
        if alternatives is None:
            return self._store.search_page(resource_type, params, offset=offset, count=count)
        if len(alternatives) == 1:
            result = self._store.search_page(
                resource_type, params + alternatives[0], offset=offset, count=count
            )
            kept = [r for r in result.resources if self.policy.permits(r, "s")]
            return SearchResult(result.total - (len(result.resources) - len(kept)), kept)
        found = self._union(resource_type, params, alternatives)
        end = None if count is None else offset + count
        return SearchResult(total=len(found), resources=found[offset:end])

    def _check_reach(self, resource_type: str, params: Params) -> None:
        """Chains, `_has` and `_list` are resolved inside the store, over every resource of
        the types they name: allowed only where the caller may search all of them (else a
        chain through a performer would be an oracle on another patient's record)."""
        query = parse_query(resource_type, params, registry_=self.registry, lenient=True)
        for crit in query.criteria:
            self._reach(crit)

    def _reach(self, crit: Criterion | Has | InList) -> None:
        if isinstance(crit, InList):
            if not self.policy.whole_type("List", "r"):
                raise Forbidden("_list reads a List the token may not read: it needs user/List.r")
        elif isinstance(crit, Has):
            if not self.policy.whole_type(crit.source_type, "s"):
                raise Forbidden(
                    f"_has:{crit.source_type} looks into {crit.source_type} resources the "
                    "token may not search"
                )
            self._reach(crit.criterion)
        elif crit.chain is not None:
            target = crit.chain_type
            if target is None or not self.policy.whole_type(target, "s"):
                raise Forbidden(
                    f"the chain {crit.param.code}:{target or '?'} looks into resources the "
                    "token may not search"
                )
            self._reach(crit.chain)

    def _union(
        self, resource_type: str, params: Params, alternatives: list[Params]
    ) -> list[Resource]:
        """Every match the caller may see: one store query per alternative, unioned and
        put back in the search's order (`_sort`, else oldest write first)."""
        by_id: dict[str, Resource] = {}
        for alternative in alternatives:
            try:
                matched = self._store.search(resource_type, params + alternative)
            except BadRequest:
                # a compartment link the store cannot search: scan, filter by the rule
                matched = self._store.search(resource_type, params)
            for resource in matched:
                if resource["id"] not in by_id and self.policy.permits(resource, "s"):
                    by_id[resource["id"]] = resource
        found = list(by_id.values())
        if any(k == "_sort" for k, _ in params):
            query = parse_query(resource_type, params, registry_=self.registry, lenient=True)
            return sort_resources(found, query.sort)
        return sorted(
            found, key=lambda r: ((r.get("meta") or {}).get("lastUpdated") or "", r["id"])
        )

    def iter_resources(self, resource_type: str) -> Iterable[Resource]:
        if self._open:
            return self._store.iter_resources(resource_type)
        return self.search(resource_type, [])

    # ---- history ----------------------------------------------------------------------------

    def history(
        self,
        resource_type: str | None = None,
        id: str | None = None,
        since: str | None = None,
    ) -> list[Resource]:
        """Versions newest first; each version the caller may not read is left out."""
        if not self._open and resource_type is not None:
            self.policy.rules(resource_type, "r" if id else "s")  # 403 naming the scope
        entries = self._store.history(resource_type, id, since=since)
        if self._open:
            return entries
        letter = "r" if id else "s"
        kept = [e for e in entries if self._entry_visible(e, letter)]
        if id and entries and not kept:
            raise Forbidden("no version of the resource is in the reach of the token")
        return kept

    def _entry_visible(self, entry: Resource, letter: str) -> bool:
        resource = entry.get("resource")
        if isinstance(resource, dict):
            return self.policy.permits(resource, letter)
        # a deletion carries no body: only for callers who reach the whole type
        url = str((entry.get("request") or {}).get("url") or "")
        return self.policy.whole_type(url.split("/")[0], letter)

    def changes(self, after_seq: int, limit: int | None = None) -> list[Change]:
        if not self._open:
            raise Forbidden("the change log needs an unrestricted system/ scope")
        return self._store.changes(after_seq, limit)

    # ---- writes -----------------------------------------------------------------------------

    def commit(self, ops: list[WriteOp], meta: dict[str, Any] | None = None) -> list[WriteResult]:
        """Check every op against the scopes, then commit them all (or none)."""
        if not self._open:
            olds = []
            for index, op in enumerate(ops):
                try:
                    olds.append(self._check(op))
                except Forbidden as exc:
                    exc.op_index = index  # type: ignore[attr-defined] # which op (Bundle entry)
                    raise
        else:  # only a deletion's audit needs the version it removes
            audited = self._on_write is not None
            olds = [self._stored(op) if audited and op.method == "delete" else None for op in ops]
        if meta is not None:
            results = self._store.commit(ops, meta=meta)  # type: ignore[call-arg]
        else:
            results = self._store.commit(ops)
        if self._on_write is not None:
            for op, old, result in zip(ops, olds, results, strict=False):
                written = old if op.method == "delete" else result.resource
                if written is not None:
                    self._on_write(_ACTION[op.method], written)
        return results

    def _stored(self, op: WriteOp) -> Resource | None:
        if op.id is None or not self._store.exists(op.resource_type, op.id):
            return None
        return self._store.read(op.resource_type, op.id)

    def _check(self, op: WriteOp) -> Resource | None:
        """Forbidden unless the op is allowed; the stored version it replaces (or None)."""
        policy = self.policy
        rtype = op.resource_type
        body = op.resource
        if isinstance(body, dict) and op.id is not None and op.method == "update":
            body = {**body, "id": op.id}  # what the store will write (a Patient's own id)
        try:
            if op.method == "create":
                policy.check_write(rtype, "c", body, creating=True)
                return None
            old = self._stored(op)
            if op.method == "delete":
                policy.check_delete(rtype, old)
                if op.cascade and not policy.unrestricted:
                    raise Forbidden("a cascading delete needs an unrestricted system/ scope")
                return old
            if old is None:  # an update that creates (client-assigned id)
                policy.check_write(rtype, "c", body, creating=True)
                return None
            policy.check_write(rtype, "u", old)
            policy.check_write(rtype, "u", body)
            return old
        except Forbidden as exc:
            exc.diagnostics = f"{op.method} {rtype}: {exc.diagnostics}"
            raise

    # ---- the rest of the Store protocol --------------------------------------------------------

    def get_meta(self, key: str, default: Any = None) -> Any:
        return self._store.get_meta(key, default)

    def set_meta(self, key: str, value: Any) -> None:
        self._store.set_meta(key, value)

    def set_meta_many(self, values: dict[str, Any]) -> None:
        many = getattr(self._store, "set_meta_many", None)
        if many is not None:
            many(values)
        else:
            for k, v in values.items():
                self._store.set_meta(k, v)

    def close(self) -> None:
        """The view owns nothing; the store is closed by its owner."""
