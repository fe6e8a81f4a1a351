"""Running a parsed query over a store's resources, narrowed by its indexes.

The store provides a `SearchSource`: live resources by id, and index lookups that give a
superset of the matches (or None when an index cannot narrow). Every candidate is then
checked against every criterion, so an index can only make a search faster, never wrong.
Chains, `_has` and `_list` are resolved first into sets of references or ids.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Protocol

from fhircare.fhir.registry import SearchRegistry
from fhircare.fhir.search import values as V
from fhircare.fhir.search.match import (
    IdIn,
    RefIn,
    embeds_resources,
    extract,
    matches,
    reference_keys,
    sort_value,
)
from fhircare.fhir.search.query import Criterion, Has, InList, Query, SortKey

Resource = dict[str, Any]
Resolved = Criterion | RefIn | IdIn


class SearchSource(Protocol):
    """What the engine needs from a store."""

    registry: SearchRegistry

    def live_ids(self, resource_type: str) -> Collection[str]:
        """Every live id of the type."""

    def body(self, resource_type: str, id: str) -> Resource | None:
        """The live resource (not copied: the engine only reads it), or None."""

    def order(self, resource_type: str, ids: Collection[str]) -> list[str]:
        """The ids in the store's natural order (oldest write first)."""

    def candidates(
        self, resource_type: str, crit: Criterion, within: set[str] | None = None
    ) -> set[str] | None:
        """Ids that may match the criterion (a superset), or None when no index helps; with
        `within`, only those in it."""

    def referrers(self, resource_type: str, key: str, within: set[str] | None = None) -> set[str]:
        """Ids of live resources of the type holding a reference to `key` ('Type/id'); with
        `within`, only those in it."""

    # Optional (a source without them is ordered by the kind of criterion alone):
    #   candidate_count(resource_type, crit) -> int | None: an upper bound of how many ids
    #     `candidates` gives (the sizes of the index's posting sets, nothing materialised);
    #   referrer_count(resource_type, key) -> int: how many resources reference `key`.


def execute(source: SearchSource, query: Query, *, base_url: str | None = None) -> list[Resource]:
    """The matching resources (not copied), sorted."""
    ids = matching_ids(source, query.resource_type, query.criteria, base_url=base_url)
    found = [r for i in ids if (r := source.body(query.resource_type, i)) is not None]
    return sort_resources(found, query.sort) if query.sort else found


def matching_ids(
    source: SearchSource,
    resource_type: str,
    criteria: list[Criterion | Has | InList],
    *,
    base_url: str | None = None,
) -> list[str]:
    resolved = [_resolve(source, resource_type, c, base_url) for c in criteria]
    pool: set[str] | None = None
    for crit in _cheapest_first(source, resource_type, resolved, base_url):
        # each lookup after the first is confined to what the earlier ones left, so that it
        # costs the size of the pool, not the number of resources holding a common value
        # (one patient's Conditions narrowed by a chronic code: not every chronic Condition)
        found = _candidates(source, resource_type, crit, base_url, pool)
        if found is None:
            continue
        pool = found
        if not pool:
            return []
    ids: Collection[str] = source.live_ids(resource_type) if pool is None else pool
    reg = source.registry
    out = []
    for rid in ids:
        body = source.body(resource_type, rid)
        if body is not None and all(matches(body, c, reg=reg, base_url=base_url) for c in resolved):
            out.append(rid)
    return source.order(resource_type, out) if pool is not None else out


def _cheapest_first(
    source: SearchSource, resource_type: str, resolved: list[Resolved], base_url: str | None
) -> list[Resolved]:
    """The criteria in the order their lookups run: the one whose index posting sets are
    smallest first (counted, not materialised), so `code=<many>&patient=X` starts from the
    patient's few resources whatever the query's order; a criterion without a count keeps
    its place by kind (ids, references, tokens, the rest), after every counted one."""
    if len(resolved) < 2:
        return resolved
    ranked = []
    for n, crit in enumerate(resolved):
        size = _size(source, resource_type, crit, base_url)
        ranked.append((size is None, size or 0, _selectivity(crit), n, crit))
    return [r[-1] for r in sorted(ranked, key=lambda r: r[:4])]


def _size(
    source: SearchSource, resource_type: str, crit: Resolved, base_url: str | None
) -> int | None:
    """An upper bound of how many ids the criterion's lookup gives, or None when unknown."""
    if isinstance(crit, IdIn):
        return len(crit.ids)
    ref_count = getattr(source, "referrer_count", None)
    if isinstance(crit, RefIn):
        return None if ref_count is None else sum(ref_count(resource_type, k) for k in crit.keys)
    if crit.chain is not None:
        return None
    if crit.param.type == "reference" and (crit.modifier is None or crit.modifier[0].isupper()):
        if ref_count is None:
            return None
        return sum(
            ref_count(resource_type, key)
            for value in crit.values
            for key in reference_keys(crit.param, crit.modifier, value, base_url)
        )
    if crit.param.code == "_id" and crit.modifier is None:
        return len(crit.values)
    term_count = getattr(source, "candidate_count", None)
    return None if term_count is None else term_count(resource_type, crit)


def _selectivity(crit: Resolved) -> int:
    if isinstance(crit, IdIn):
        return 0
    if isinstance(crit, RefIn):
        return 1
    return 2 if crit.param.type in ("token", "reference") else 3


def _candidates(
    source: SearchSource,
    resource_type: str,
    crit: Resolved,
    base_url: str | None,
    within: set[str] | None = None,
) -> set[str] | None:
    """Ids that may match `crit` (a superset), and only those in `within` when given."""
    if isinstance(crit, IdIn):
        return set(crit.ids) if within is None else within.intersection(crit.ids)
    if isinstance(crit, RefIn):
        out: set[str] = set()
        for key in crit.keys:
            out |= source.referrers(resource_type, key, within)
        return out
    if crit.chain is not None:
        return None
    if crit.param.type == "reference" and (crit.modifier is None or crit.modifier[0].isupper()):
        out = set()
        for value in crit.values:
            for key in reference_keys(crit.param, crit.modifier, value, base_url):
                out |= source.referrers(resource_type, key, within)
        return out
    if crit.param.code == "_id" and crit.modifier is None:
        values = crit.values if within is None else [v for v in crit.values if v in within]
        return {v for v in values if source.body(resource_type, v) is not None}
    return source.candidates(resource_type, crit, within)


def _resolve(
    source: SearchSource, resource_type: str, crit: Criterion | Has | InList, base_url: str | None
) -> Resolved:
    if isinstance(crit, InList):
        lst = source.body("List", crit.list_id)
        ids: set[str] = set()
        for entry in (lst or {}).get("entry") or []:
            ref = ((entry or {}).get("item") or {}).get("reference")
            if isinstance(ref, str):
                key = V.reference_key(ref)
                if key.startswith(resource_type + "/"):
                    ids.add(key.split("/", 1)[1])
        return IdIn(frozenset(ids))
    if isinstance(crit, Has):
        holders = matching_ids(source, crit.source_type, [crit.criterion], base_url=base_url)
        prefix = resource_type + "/"
        found: set[str] = set()
        for hid in holders:
            body = source.body(crit.source_type, hid)
            if body is None:
                continue
            for key in V.references(extract(crit.reference, body)):
                if key.startswith(prefix):
                    found.add(key[len(prefix) :])
        return IdIn(frozenset(found))
    if crit.chain is not None and embeds_resources(crit.param):
        return crit  # matched on the resources inside (Bundle.entry[0].resource)
    if crit.chain is not None:
        assert crit.chain_type is not None
        targets = matching_ids(source, crit.chain_type, [crit.chain], base_url=base_url)
        return RefIn(crit.param, frozenset(f"{crit.chain_type}/{t}" for t in targets))
    return crit


def sort_resources(resources: list[Resource], keys: list[SortKey]) -> list[Resource]:
    """Stable multi-key sort; resources without a value come last in either direction."""
    for key in reversed(keys):
        valued = []
        missing = []
        for r in resources:
            v = sort_value(key.param, r, key.descending)
            (missing if v is None else valued).append((v, r))
        valued.sort(key=lambda p: p[0], reverse=key.descending)
        resources = [r for _, r in valued] + [r for _, r in missing]
    return resources
