"""The embedded store's search indexes, built at write time from the registry's expressions.

Per resource type, two inverted maps from a key to the ids of the live resources holding it:

* references: every `Reference.reference` in the resource ('Type/id', or the absolute URL),
  and the canonical values of reference parameters; this also answers "who points at this
  resource?" for referential integrity, `_revinclude`, `_has` and chains;
* terms: `code␟value` for token parameters (the code alone and `system|code`), uri
  parameters (the uri) and string parameters (the first three characters, normalised).

An index lookup gives a superset of the matches; the engine checks every candidate, so the
indexes only make searches faster. Dates, numbers and quantities are not indexed: a search
on them alone scans the type, and with a reference or token criterion it is narrowed first.

Deferred types (the store's AuditEvents: the server writes one or more per request, and
they are seldom searched) are indexed when a lookup first needs them: a write only notes
the id and the version it replaced, and the next lookup on the type indexes what changed
since the last one. Searches see the same results; the indexing is paid once, by the first
search that needs it, not by every request that writes an audit record.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from fhircare.fhir.fhirpath import final_elements, is_fast, top_level_keys
from fhircare.fhir.references import iter_references
from fhircare.fhir.registry import SearchParam, SearchRegistry
from fhircare.fhir.search import values as V
from fhircare.fhir.search.match import extract, implicit_system, token_query
from fhircare.fhir.search.query import Criterion, split_values

SEP = "\x1f"
STRING_PREFIX = 3
TERM_TYPES = ("token", "uri", "string")


def _indexed(params: Iterable[SearchParam]) -> tuple[tuple[SearchParam, ...], ...]:
    """(term params, canonical reference params) worth indexing: on the fast path."""
    terms = []
    canonical = []
    for p in params:
        if not p.expression or not is_fast(p.expression, p.resource_type):
            continue
        if p.type in TERM_TYPES and p.code != "_id":
            terms.append(p)
        elif p.type == "reference":
            finals = final_elements(p.expression, p.resource_type) or ()
            if any(t in ("canonical", "uri", "") for _, t in finals):
                canonical.append(p)
    return tuple(terms), tuple(canonical)


def term_keys(param: SearchParam, resource: dict[str, Any]) -> set[str]:
    values = extract(param, resource)
    code = param.code + SEP
    out: set[str] = set()
    if param.type == "token":
        for system, value in V.tokens(values, implicit_system(param)):
            out.add(code + value)
            if system:
                out.add(f"{code}{system}|{value}")
    elif param.type == "uri":
        out.update(code + u for u in V.uris(values))
    elif param.type == "string":
        for s in V.strings(values):
            n = V.normalise(s)
            if len(n) >= STRING_PREFIX:
                out.add(code + n[:STRING_PREFIX])
    return out


@dataclass(frozen=True)
class Keys:
    """The index keys of one resource, under one version of the registry."""

    registry_version: int
    refs: frozenset[str]
    terms: frozenset[str]


Body = Callable[[str, str], dict[str, Any] | None]  # (type, id) -> the live resource
VersionBody = Callable[[str, str, str], dict[str, Any] | None]  # (type, id, versionId)


class SearchIndex:
    """Inverted maps of one store, kept in step with its live resources.

    `deferred` types are indexed at their next lookup (`touch` notes a change); `body` and
    `version_body` read the store's applied state for that. Every lookup and change runs
    under the store's read lock."""

    def __init__(
        self,
        registry: SearchRegistry,
        *,
        deferred: frozenset[str] = frozenset(),
        body: Body | None = None,
        version_body: VersionBody | None = None,
    ) -> None:
        if deferred and (body is None or version_body is None):
            raise ValueError("deferred types need the body and version_body readers")
        self.registry = registry
        self.refs: dict[str, dict[str, set[str]]] = {}
        self.terms: dict[str, dict[str, set[str]]] = {}
        self._plan: dict[str, tuple[int, tuple[tuple[SearchParam, ...], ...], frozenset[str]]] = {}
        self.deferred = deferred
        self._body = body
        self._version_body = version_body
        # per deferred type: (id, the versionId it replaced if that one was indexed)
        self._pending: dict[str, list[tuple[str, str | None]]] = {}

    # ---- keys of a resource ---------------------------------------------------------------

    def _params(self, resource_type: str) -> tuple[tuple[SearchParam, ...], ...]:
        return self._planned(resource_type)[1]

    def _planned(
        self, resource_type: str
    ) -> tuple[int, tuple[tuple[SearchParam, ...], ...], frozenset[str]]:
        plan = self._plan.get(resource_type)
        if plan is None or plan[0] != self.registry.version:
            params = _indexed(self.registry.params(resource_type).values())
            plan = (self.registry.version, params, frozenset(p.code for p in params[0]))
            self._plan[resource_type] = plan
        return plan

    def reference_keys(self, resource_type: str, resource: dict[str, Any]) -> set[str]:
        keys = {
            V.reference_key(ref["reference"])
            for _, ref in iter_references(resource)
            if not ref["reference"].startswith("#")
        }
        for param in self._params(resource_type)[1]:
            needs = top_level_keys(param.expression or "", resource_type)
            if needs is None or not needs.isdisjoint(resource.keys()):
                keys.update(V.references(extract(param, resource)))
        return keys

    def term_keys(self, resource_type: str, resource: dict[str, Any]) -> set[str]:
        out: set[str] = set()
        for param in self._params(resource_type)[0]:
            needs = top_level_keys(param.expression or "", resource_type)
            if needs is not None and needs.isdisjoint(resource.keys()):
                continue  # the resource holds nothing this parameter reads
            out |= term_keys(param, resource)
        return out

    def keys(self, resource_type: str, resource: dict[str, Any]) -> Keys:
        """Every index key of a resource (computed without touching the maps, so a writer
        can do it before the store applies the commit)."""
        return Keys(
            self.registry.version,
            frozenset(self.reference_keys(resource_type, resource)),
            frozenset(self.term_keys(resource_type, resource)),
        )

    # ---- maintenance ----------------------------------------------------------------------

    def add(self, resource_type: str, rid: str, resource: dict[str, Any]) -> None:
        if resource_type in self.deferred:
            self.touch(resource_type, rid, None)
            return
        self.add_keys(resource_type, rid, self.keys(resource_type, resource))

    def touch(self, resource_type: str, rid: str, replaced: str | None) -> None:
        """Note a change of a deferred type's resource: `replaced` is the versionId of the
        live version it replaced (None: there was none, or it was never indexed)."""
        self._pending.setdefault(resource_type, []).append((rid, replaced))

    def _catch_up(self, resource_type: str) -> None:
        """Index what changed in a deferred type since its last lookup."""
        pending = self._pending.pop(resource_type, None)
        if not pending:
            return
        assert self._body is not None and self._version_body is not None
        first: dict[str, str | None] = {}
        for rid, replaced in pending:  # what the index holds is what the first change replaced
            first.setdefault(rid, replaced)
        for rid, replaced in first.items():
            if replaced is not None:
                old = self._version_body(resource_type, rid, replaced)
                if old is not None:
                    self.remove_keys(resource_type, rid, self.keys(resource_type, old))
            body = self._body(resource_type, rid)
            if body is not None:
                self.add_keys(resource_type, rid, self.keys(resource_type, body))

    def remove(self, resource_type: str, rid: str, resource: dict[str, Any]) -> None:
        self.remove_keys(resource_type, rid, self.keys(resource_type, resource))

    def add_keys(self, resource_type: str, rid: str, keys: Keys) -> None:
        refs = self.refs.setdefault(resource_type, {})
        for key in keys.refs:
            refs.setdefault(key, set()).add(rid)
        terms = self.terms.setdefault(resource_type, {})
        for key in keys.terms:
            terms.setdefault(key, set()).add(rid)

    def remove_keys(self, resource_type: str, rid: str, keys: Keys) -> None:
        for index, found in ((self.refs, keys.refs), (self.terms, keys.terms)):
            by_key = index.get(resource_type, {})
            for key in found:
                holders = by_key.get(key)
                if holders is not None:
                    holders.discard(rid)
                    if not holders:
                        del by_key[key]

    def rebuild(self, resource_type: str, live: Iterable[tuple[str, dict[str, Any]]]) -> None:
        """Index a type afresh (after its search parameters changed)."""
        self.refs.pop(resource_type, None)
        self.terms.pop(resource_type, None)
        self._pending.pop(resource_type, None)  # nothing of the type is indexed any more
        for rid, resource in live:
            self.add(resource_type, rid, resource)

    # ---- lookups --------------------------------------------------------------------------

    def referrers(self, resource_type: str, key: str, within: set[str] | None = None) -> set[str]:
        """Ids of the type's live resources referencing `key`; with `within`, only those of
        them in it (costs the smaller of the two sets, not the holders')."""
        if resource_type in self._pending:
            self._catch_up(resource_type)
        holders = self.refs.get(resource_type, {}).get(key, ())
        if within is not None:
            return within & holders if isinstance(holders, set) else set()
        return set(holders)

    def referrer_types(
        self, key: str, skip: frozenset[str] = frozenset()
    ) -> Iterable[tuple[str, set[str]]]:
        """(type, ids) of the resources referencing `key`, but for the `skip` types."""
        for rtype in [t for t in self._pending if t not in skip]:
            self._catch_up(rtype)
        for rtype, index in list(self.refs.items()):
            if rtype in skip:
                continue
            holders = index.get(key)
            if holders:
                yield rtype, holders

    def referrer_count(self, resource_type: str, key: str) -> int:
        """How many of the type's live resources reference `key` (nothing materialised)."""
        if resource_type in self._pending:
            self._catch_up(resource_type)
        return len(self.refs.get(resource_type, {}).get(key, ()))

    def _term_keys(self, resource_type: str, crit: Criterion) -> list[str] | None:
        """The index keys a term criterion looks up, or None when not indexed."""
        param = crit.param
        if param.type not in TERM_TYPES or param.code not in self._planned(resource_type)[2]:
            return None
        code = param.code + SEP
        keys: list[str] = []
        if param.type == "token" and crit.modifier is None:
            for value in crit.values:
                system, c = token_query(value)
                if c is None:
                    return None
                keys.append(f"{code}{system}|{c}" if system else code + c)
        elif param.type == "uri" and crit.modifier is None:
            keys = [code + v for v in crit.values]
        elif param.type == "string" and crit.modifier in (None, "exact"):
            for value in crit.values:
                n = V.normalise(value)
                if len(n) < STRING_PREFIX:
                    return None
                keys.append(code + n[:STRING_PREFIX])
        else:
            return None
        return keys

    def candidate_count(self, resource_type: str, crit: Criterion) -> int | None:
        """An upper bound of how many ids `candidates` gives for a term criterion (the sizes
        of its keys' posting sets, nothing materialised), or None when not indexed."""
        postings = self._postings(resource_type, crit)
        if postings is None:
            return None
        return sum(len(holders) for holders in postings)

    def candidates(
        self, resource_type: str, crit: Criterion, within: set[str] | None = None
    ) -> set[str] | None:
        """A superset of the ids matching a term criterion, or None when not indexed. With
        `within` (the ids the other criteria left), only those of them: each key's holders
        are intersected with it, so a common code costs the size of `within`, not the number
        of resources holding the code."""
        postings = self._postings(resource_type, crit)
        if postings is None:
            return None
        out: set[str] = set()
        for holders in postings:
            out |= holders if within is None else within & holders
        return out

    def _postings(self, resource_type: str, crit: Criterion) -> list[set[str]] | None:
        """The non-empty posting sets of a term criterion's keys (the index caught up), or
        None when it is not indexed."""
        keys = self._term_keys(resource_type, crit)
        if keys is None:
            return None
        if resource_type in self._pending:
            self._catch_up(resource_type)
        terms = self.terms.get(resource_type, {})
        return [holders for key in keys if (holders := terms.get(key))]


__all__ = ["Keys", "SearchIndex", "split_values"]
