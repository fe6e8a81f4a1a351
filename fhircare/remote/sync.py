"""Sync between the local store and a remote FHIR server (HAPI): push, pull, conflicts.

The outbox is the store's durable change log: everything after the `sync.push.seq`
watermark that was written with origin "local" is still to be pushed, so a crash or an
outage loses nothing. Durable sync state lives in the store's meta values:

* `sync.push.seq`: the last change-log seq fully acknowledged by the server;
* `sync.remote.<Type>/<id>`: the remote versionId last seen (pushed or pulled);
* `sync.local.<Type>/<id>`: the local versionId that was in sync with that remote version;
* `sync.pull.<Type>` (or `sync.pull.<Type>?patient=...`): the pull watermark, the server's
  greatest `meta.lastUpdated` seen; `sync.pull.keys` lists them;
* `sync.conflicts`: open conflicts, `{"Type/id": {...}}`.

A resource changed locally since the last sync (its current local version is not the
recorded `sync.local` one) and remotely (the remote version is not the recorded
`sync.remote` one) is a conflict; pull resolves it per policy: "flag" keeps the local
version, records the conflict and holds the resource back from push until `resolve` is
called; "remote-wins" overwrites the local copy; "local-wins" keeps local and lets the next
push overwrite the server.

Push sends PUTs with the stable local ids inside transaction Bundles, so a retry after an
ambiguous failure cannot duplicate anything. Each PUT of a resource seen on the server before
carries `ifMatch` with the remote version last seen, so an edit made on the server since is
never overwritten: the server refuses the Bundle (HAPI answers 409, FHIR says 412; both are
read as a conflict), the Bundle is split until the resource is found, and the conflict is
settled under the policy, as pull does. HAPI ignores If-Match on DELETE, so a delete is sent
only after a read shows the remote version is still the one last seen. Pull uses search with
`_lastUpdated`, so deletions made on the server are not pulled. Every read bypasses HAPI's
search cache (the client sends `Cache-Control: no-cache`).
"""

from __future__ import annotations

import hashlib
import heapq
import inspect
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from fhircare.fhir.datetimes import parse_datetime
from fhircare.fhir.errors import FhirError, Gone, NotFound
from fhircare.fhir.meta import without_server_meta
from fhircare.remote.client import FhirClient, parse_etag, version_from_location
from fhircare.store.base import Change, Store, WriteOp

Policy = Literal["flag", "remote-wins", "local-wins"]
Progress = Callable[[int, int], None]

PUSH_SEQ = "sync.push.seq"
PULL_KEYS = "sync.pull.keys"
CONFLICTS = "sync.conflicts"
REJECTED = "sync.rejected"
# Statuses that mean "this content is refused", not "the server is unwell": the Bundle is
# split to find the resources at fault, which are recorded and retried on later pushes.
REJECT_STATUSES = frozenset({400, 404, 409, 410, 412, 422})
# A stale If-Match: HAPI answers 409 (HAPI-0989), the FHIR specification 412.
CONFLICT_STATUSES = frozenset({409, 412})

# Fallback order when references inside a batch do not decide it: what others point at
# goes first. Types not listed rank 3.
TYPE_RANK: dict[str, int] = {
    **dict.fromkeys(
        [
            "Patient",
            "Practitioner",
            "Organization",
            "Location",
            "RelatedPerson",
            "Medication",
            "Device",
            "Substance",
            "Questionnaire",
            "PlanDefinition",
            "ActivityDefinition",
            "ValueSet",
            "CodeSystem",
            "StructureDefinition",
            "Library",
            "Group",
        ],
        0,
    ),
    **dict.fromkeys(["PractitionerRole", "HealthcareService", "Endpoint", "Coverage"], 1),
    **dict.fromkeys(
        [
            "Encounter",
            "EpisodeOfCare",
            "Condition",
            "Observation",
            "Goal",
            "CareTeam",
            "AllergyIntolerance",
            "Procedure",
            "QuestionnaireResponse",
            "Consent",
            "Flag",
            "DocumentReference",
            "MedicationStatement",
            "Immunization",
        ],
        2,
    ),
    **dict.fromkeys(
        [
            "CarePlan",
            "ServiceRequest",
            "MedicationRequest",
            "Appointment",
            "CommunicationRequest",
            "Communication",
            "RiskAssessment",
            "ClinicalImpression",
            "DiagnosticReport",
            "MedicationDispense",
            "MedicationAdministration",
            "NutritionOrder",
            "DeviceRequest",
        ],
        3,
    ),
    **dict.fromkeys(
        ["Task", "List", "DetectedIssue", "Provenance", "AuditEvent", "Composition"], 4
    ),
}
DEFAULT_RANK = 3

# Types outside the Patient compartment: a patient filter does not apply to them.
NON_PATIENT_TYPES = frozenset(
    [
        "Practitioner",
        "PractitionerRole",
        "Organization",
        "Location",
        "Medication",
        "Device",
        "Substance",
        "Questionnaire",
        "PlanDefinition",
        "ActivityDefinition",
        "ValueSet",
        "CodeSystem",
        "StructureDefinition",
        "Library",
        "HealthcareService",
        "Endpoint",
        "Subscription",
    ]
)


def remote_key(resource_type: str, id: str) -> str:
    return f"sync.remote.{resource_type}/{id}"


def local_key(resource_type: str, id: str) -> str:
    return f"sync.local.{resource_type}/{id}"


def pull_key(
    resource_type: str,
    patients: Sequence[str] | None = None,
    where: Sequence[tuple[str, str]] = (),
) -> str:
    """The watermark key of one pull query (type, optional patient filter and parameters)."""
    query = [f"{k}={v}" for k, v in sorted(where)]
    if patients:
        query.append(f"patient={','.join(sorted(patients))}")
    return f"sync.pull.{resource_type}" + ("?" + "&".join(query) if query else "")


# ---- store helpers (EmbeddedStore offers atomic commit+meta and multi-key meta) ---------------


def _set_meta(store: Store, values: dict[str, Any]) -> None:
    if not values:
        return
    many = getattr(store, "set_meta_many", None)
    if callable(many):
        many(values)
    else:
        for k, v in values.items():
            store.set_meta(k, v)


def _commit_with_meta(store: Store, ops: list[WriteOp], meta: dict[str, Any]) -> list[Any]:
    """Commit ops and meta together when the store can (atomic), else one after the other."""
    if not ops:
        _set_meta(store, meta)
        return []
    if "meta" in inspect.signature(store.commit).parameters:
        return store.commit(ops, meta=meta)  # type: ignore[call-arg]
    results = store.commit(ops)
    _set_meta(store, meta)
    return results


def conflicts(store: Store) -> dict[str, dict[str, Any]]:
    """Open conflicts keyed by 'Type/id'."""
    return dict(store.get_meta(CONFLICTS, {}) or {})


def rejected(store: Store) -> dict[str, dict[str, Any]]:
    """Resources the server refused (4xx), keyed by 'Type/id', with its diagnostics."""
    return dict(store.get_meta(REJECTED, {}) or {})


# ---- push -----------------------------------------------------------------------------------


@dataclass
class PushReport:
    changes: int = 0  # change-log entries read
    pushed: int = 0  # resources created/updated on the server
    deleted: int = 0
    skipped: int = 0  # remote-origin or already pushed
    held: list[str] = field(default_factory=list)  # open conflicts not pushed
    conflicts: list[str] = field(default_factory=list)  # edited on the server too, flagged now
    remote_wins: int = 0  # conflicts settled by taking the server's version
    local_wins: int = 0  # conflicts settled by overwriting the server's version
    rejected: dict[str, str] = field(default_factory=dict)  # ref -> the server's diagnostics
    bundles: int = 0
    seq: int = 0  # the push watermark after this push
    seconds: float = 0.0


def _ref_target(reference: str) -> tuple[str, str] | None:
    """('Patient', 'x') for 'Patient/x', '.../Patient/x/_history/2' or an absolute URL."""
    ref = reference.split("/_history/", 1)[0].split("?", 1)[0]
    parts = ref.rstrip("/").split("/")
    if len(parts) < 2 or not parts[-2][:1].isupper() or not parts[-2].isalpha():
        return None
    return parts[-2], parts[-1]


def _references(node: Any) -> Iterable[str]:
    if isinstance(node, dict):
        ref = node.get("reference")
        if isinstance(ref, str):
            yield ref
        for key, value in node.items():
            if key != "contained":
                yield from _references(value)
    elif isinstance(node, list):
        for item in node:
            yield from _references(item)


def dependency_order(items: Sequence[Change]) -> list[Change]:
    """Referenced resources before the ones referring to them (within `items`).

    Ties, and cycles, fall back to TYPE_RANK then change seq.
    """
    by_key = {(c.resource_type, c.id): c for c in items}
    deps: dict[tuple[str, str], set[tuple[str, str]]] = {}
    users: dict[tuple[str, str], list[tuple[str, str]]] = {k: [] for k in by_key}
    for key, c in by_key.items():
        targets = {t for r in _references(c.resource) if (t := _ref_target(r)) in by_key}
        targets.discard(key)
        deps[key] = targets
        for t in targets:
            users[t].append(key)

    def rank(k: tuple[str, str]) -> tuple[int, int]:
        return TYPE_RANK.get(k[0], DEFAULT_RANK), by_key[k].seq

    ready = [(rank(k), k) for k, d in deps.items() if not d]
    heapq.heapify(ready)
    out: list[Change] = []
    while ready:
        _, key = heapq.heappop(ready)
        out.append(by_key[key])
        for user in users[key]:
            deps[user].discard(key)
            if not deps[user]:
                heapq.heappush(ready, (rank(user), user))
    if len(out) < len(by_key):  # a reference cycle: the rest by rank
        done = {(c.resource_type, c.id) for c in out}
        out.extend(
            sorted(
                (c for k, c in by_key.items() if k not in done),
                key=lambda c: rank((c.resource_type, c.id)),
            )
        )
    return out


def pending_changes(store: Store) -> tuple[list[Change], list[str], int, int, int]:
    """(changes to push, held conflict refs, skipped, entries read, last seq read)."""
    after = int(store.get_meta(PUSH_SEQ, 0) or 0)
    log = store.changes(after)
    latest: dict[tuple[str, str], Change] = {}
    for c in log:  # oldest first: the last one per resource wins
        latest[(c.resource_type, c.id)] = c
    open_conflicts = conflicts(store)
    todo: list[Change] = []
    held: list[str] = []
    skipped = 0
    for (rtype, rid), c in latest.items():
        ref = f"{rtype}/{rid}"
        if c.origin != "local" or store.get_meta(local_key(rtype, rid)) == c.version_id:
            skipped += 1
        elif ref in open_conflicts:
            held.append(ref)
        else:
            todo.append(c)
    for ref in rejected(store):  # rejected earlier: tried again on every push
        rtype, rid = ref.split("/", 1)
        vid = store.current_version(rtype, rid)
        if (rtype, rid) in latest or vid is None or store.get_meta(local_key(rtype, rid)) == vid:
            continue
        alive = store.exists(rtype, rid)
        resource = store.read(rtype, rid) if alive else None
        todo.append(Change(0, rtype, rid, vid, not alive, "local", "", resource))
    last = log[-1].seq if log else after
    return todo, held, skipped, len(log), last


def _clean(resource: dict[str, Any]) -> dict[str, Any]:
    """The resource to send: the server owns versionId and lastUpdated."""
    return without_server_meta(resource)


def push_bundle(
    chunk: Sequence[Change], base_url: str, if_match: dict[str, str] | None = None
) -> dict[str, Any]:
    """A transaction Bundle of idempotent PUT/DELETE entries for `chunk`; a PUT whose
    'Type/id' is in `if_match` carries `ifMatch` with that remote version."""
    entries: list[dict[str, Any]] = []
    for c in chunk:
        url = f"{c.resource_type}/{c.id}"
        if c.deleted:
            entries.append({"request": {"method": "DELETE", "url": url}})
        else:
            assert c.resource is not None
            request: dict[str, Any] = {"method": "PUT", "url": url}
            if if_match and if_match.get(url):
                request["ifMatch"] = f'W/"{if_match[url]}"'
            entries.append(
                {"fullUrl": f"{base_url}/{url}", "resource": _clean(c.resource), "request": request}
            )
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def remote_state(client: FhirClient, resource_type: str, id: str) -> tuple[str | None, Any]:
    """(current remote versionId, the resource; None when deleted) or (None, None) when the
    server never had it. A read: never answered from a search cache."""
    try:
        resource = client.read(resource_type, id)
    except NotFound:
        return None, None
    except Gone:
        for entry in client.history(resource_type, id, count=1):
            resp = entry.get("response") or {}
            return parse_etag(resp.get("etag")) or version_from_location(resp.get("location")), None
        return None, None
    return (resource.get("meta") or {}).get("versionId"), resource


def _same_content(local: dict[str, Any] | None, remote: dict[str, Any] | None) -> bool:
    if local is None or remote is None:
        return local is None and remote is None
    return _clean(local) == _clean(remote)


class _Push:
    """One push run: the Bundles, their bookkeeping and the conflicts met on the way."""

    def __init__(self, store: Store, client: FhirClient, policy: Policy, report: PushReport):
        self.store = store
        self.client = client
        self.policy = policy
        self.report = report
        self.refused = rejected(store)
        self.open_conflicts = conflicts(store)

    def expected(self, chunk: Sequence[Change]) -> dict[str, str]:
        """'Type/id' -> the remote version last seen, for the resources seen before."""
        out = {}
        for c in chunk:
            vid = self.store.get_meta(remote_key(c.resource_type, c.id))
            if vid:
                out[f"{c.resource_type}/{c.id}"] = str(vid)
        return out

    def send(self, chunk: Sequence[Change]) -> list[Sequence[Change]]:
        """Push one chunk; the halves to push instead when the server refused it."""
        expected = self.expected(chunk)
        stale = [c for c in chunk if c.deleted and self._delete_is_stale(c, expected)]
        if stale:
            for c in stale:
                self.settle(c, expected.get(f"{c.resource_type}/{c.id}"))
            chunk = [c for c in chunk if c not in stale]
            if not chunk:
                return []
        bundle = push_bundle(chunk, self.client.base_url, expected)
        try:
            response = self.client.transaction(bundle, prefer="return=minimal")
        except FhirError as exc:
            status = getattr(exc, "http_status", None)
            if status not in REJECT_STATUSES:
                raise
            if len(chunk) > 1:
                half = len(chunk) // 2
                return [chunk[:half], chunk[half:]]
            [c] = chunk
            ref = f"{c.resource_type}/{c.id}"
            if status in CONFLICT_STATUSES and self.settle(c, expected.get(ref)):
                return []
            self.refused[ref] = {"version": c.version_id, "diagnostics": exc.diagnostics}
            self.report.rejected[ref] = exc.diagnostics
            _set_meta(self.store, {REJECTED: self.refused})
            return []
        meta: dict[str, Any] = {}
        for c, entry in zip(chunk, response["entry"], strict=True):
            resp = entry.get("response") or {}
            vid = parse_etag(resp.get("etag")) or version_from_location(resp.get("location"))
            meta.update(self._in_sync(c.resource_type, c.id, vid, c.version_id))
            if c.deleted:
                self.report.deleted += 1
            else:
                self.report.pushed += 1
        for c in chunk:
            self.refused.pop(f"{c.resource_type}/{c.id}", None)
        meta[REJECTED] = self.refused
        _set_meta(self.store, meta)
        self.report.bundles += 1
        return []

    def _delete_is_stale(self, c: Change, expected: dict[str, str]) -> bool:
        seen = expected.get(f"{c.resource_type}/{c.id}")
        if seen is None:
            return False
        current, resource = remote_state(self.client, c.resource_type, c.id)
        return current is not None and current != seen and resource is not None

    @staticmethod
    def _in_sync(rtype: str, rid: str, remote_vid: str | None, local_vid: str | None) -> dict:
        return {remote_key(rtype, rid): remote_vid, local_key(rtype, rid): local_vid}

    def settle(self, c: Change, seen: str | None) -> bool:
        """A write the server refused as stale: our own earlier write (an answer lost), or
        an edit made on the server since `seen`, settled under the policy. False when the
        remote version is still `seen` (the refusal was about something else)."""
        rtype, rid, ref = c.resource_type, c.id, f"{c.resource_type}/{c.id}"
        current, remote = remote_state(self.client, rtype, rid)
        if current is not None and current == seen:
            return False
        if _same_content(None if c.deleted else c.resource, remote):
            _set_meta(self.store, self._in_sync(rtype, rid, current, c.version_id))
            if c.deleted:
                self.report.deleted += 1
            else:
                self.report.pushed += 1
            return True
        if self.policy == "remote-wins":
            self._take_remote(c, current, remote)
            self.report.remote_wins += 1
        elif self.policy == "local-wins":
            self._overwrite_remote(c, current)
            self.report.local_wins += 1
        else:
            self.open_conflicts[ref] = {
                "local_version": c.version_id,
                "remote_version": current,
                "remote_last_updated": ((remote or {}).get("meta") or {}).get("lastUpdated"),
                "detected": _format_instant(datetime.now(UTC)),
                "found_by": "push",
            }
            self.report.conflicts.append(ref)
            self.report.held.append(ref)
            _set_meta(self.store, {CONFLICTS: self.open_conflicts})
        return True

    def _take_remote(self, c: Change, current: str | None, remote: dict | None) -> None:
        rtype, rid = c.resource_type, c.id
        if remote is not None:
            op = WriteOp("update", rtype, id=rid, resource=remote, origin="remote")
        else:
            op = WriteOp("delete", rtype, id=rid, origin="remote")
        [res] = self.store.commit([op])
        _set_meta(self.store, self._in_sync(rtype, rid, current, res.version_id))

    def _overwrite_remote(self, c: Change, current: str | None) -> None:
        rtype, rid, ref = c.resource_type, c.id, f"{c.resource_type}/{c.id}"
        bundle = push_bundle([c], self.client.base_url, {ref: current} if current else None)
        answer = self.client.transaction(bundle, prefer="return=minimal")
        resp = (answer.get("entry") or [{}])[0].get("response") or {}
        vid = parse_etag(resp.get("etag")) or version_from_location(resp.get("location"))
        _set_meta(self.store, self._in_sync(rtype, rid, vid, c.version_id))


def push(
    store: Store,
    client: FhirClient,
    *,
    batch_size: int = 500,
    policy: Policy = "flag",
    progress: Progress | None = None,
) -> PushReport:
    """Send local changes after the watermark to the server in transaction Bundles.

    The watermark advances only after every Bundle was acknowledged; each acknowledged
    Bundle records the remote versions at once, so a resumed push skips what was sent.
    Outages and server errors stop the push (nothing is lost: it resumes next time). A
    Bundle the server refuses (400/404/409/410/412/422) is split in halves until the refused
    resources are isolated. A resource edited on the server since it was last seen (a stale
    If-Match) is a conflict settled under `policy` ("flag": recorded in `sync.conflicts` and
    held back until `resolve`; "remote-wins": the server's version replaces the local one;
    "local-wins": sent again against the server's current version). Other refused resources
    are recorded in `sync.rejected` and tried again on every later push, while the rest goes
    through.
    """
    if policy not in ("flag", "remote-wins", "local-wins"):
        raise ValueError(f"unknown conflict policy {policy!r}")
    started = time.perf_counter()
    todo, held, skipped, read, last = pending_changes(store)
    report = PushReport(changes=read, skipped=skipped, held=held)
    upserts = dependency_order([c for c in todo if not c.deleted])
    deletes = list(reversed(dependency_order([c for c in todo if c.deleted])))
    ordered = upserts + deletes
    total = len(ordered)
    if progress:
        progress(0, total)
    run = _Push(store, client, policy, report)
    queue = deque(ordered[i : i + batch_size] for i in range(0, total, batch_size))
    done = 0
    while queue:
        chunk = queue.popleft()
        halves = run.send(chunk)
        if halves:
            queue.extendleft(reversed(halves))
            continue
        done += len(chunk)
        if progress:
            progress(done, total)
    if last != int(store.get_meta(PUSH_SEQ, 0) or 0):
        store.set_meta(PUSH_SEQ, last)
    report.seq = last
    report.seconds = time.perf_counter() - started
    return report


# ---- pull -----------------------------------------------------------------------------------


@dataclass
class PullReport:
    fetched: int = 0  # resources received
    created: int = 0
    updated: int = 0
    unchanged: int = 0  # already known at that remote version
    conflicts: list[str] = field(default_factory=list)  # newly flagged
    remote_wins: int = 0
    local_wins: int = 0
    pages: int = 0
    watermarks: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


def _parse_instant(value: str) -> datetime:
    return parse_datetime(value)


def _format_instant(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _pull_params(
    resource_type: str,
    watermark: str | None,
    patients: Sequence[str] | None,
    count: int,
    overlap: float,
    total: bool,
    where: Sequence[tuple[str, str]] = (),
) -> list[tuple[str, str]]:
    params = [("_sort", "_lastUpdated"), ("_count", str(count)), *where]
    if watermark:
        since = _parse_instant(watermark) - timedelta(seconds=overlap)
        params.append(("_lastUpdated", f"ge{_format_instant(since)}"))
    if patients and resource_type not in NON_PATIENT_TYPES:
        refs = [p if "/" in p else f"Patient/{p}" for p in patients]
        if resource_type == "Patient":
            params.append(("_id", ",".join(r.split("/")[-1] for r in refs)))
        else:
            params.append(("patient", ",".join(refs)))
    if total:
        params.append(("_total", "accurate"))
    return params


def pull(
    store: Store,
    client: FhirClient,
    *,
    types: Sequence[str],
    patients: Sequence[str] | None = None,
    policy: Policy = "flag",
    count: int = 200,
    overlap: float = 1.0,
    where: Sequence[tuple[str, str]] = (),
    progress: Progress | None = None,
) -> PullReport:
    """Bring resources changed on the server since each type's watermark into the store.

    Pages are sorted by `_lastUpdated`; each page is merged, with its watermark, in one
    commit. The query starts `overlap` seconds before the watermark (`ge`) so writes in the
    same millisecond, or committed late, are not missed; resources already known at that
    remote version are skipped. `where` adds search parameters (e.g. a `_tag`); each
    distinct query keeps its own watermark.
    """
    if policy not in ("flag", "remote-wins", "local-wins"):
        raise ValueError(f"unknown conflict policy {policy!r}")
    started = time.perf_counter()
    report = PullReport()
    open_conflicts = conflicts(store)
    keys = list(store.get_meta(PULL_KEYS, []) or [])
    done = 0
    grand_total = 0
    for rtype in types:
        scoped = patients if rtype not in NON_PATIENT_TYPES else None
        wkey = pull_key(rtype, scoped, where)
        watermark = store.get_meta(wkey)
        params = _pull_params(rtype, watermark, scoped, count, overlap, progress is not None, where)
        for n, page in enumerate(client.pages(rtype, params)):
            report.pages += 1
            if n == 0 and isinstance(page.get("total"), int):
                grand_total += page["total"]
            resources = [
                e["resource"]
                for e in page.get("entry") or []
                if "resource" in e and (e.get("search") or {}).get("mode", "match") == "match"
            ]
            watermark = _merge_page(
                store, rtype, resources, policy, open_conflicts, report, watermark, wkey, keys
            )
            done += len(resources)
            if progress:
                progress(done, max(grand_total, done))
        if watermark:
            report.watermarks[wkey] = watermark
    report.seconds = time.perf_counter() - started
    return report


def _merge_page(
    store: Store,
    rtype: str,
    resources: list[dict[str, Any]],
    policy: Policy,
    open_conflicts: dict[str, dict[str, Any]],
    report: PullReport,
    watermark: str | None,
    wkey: str | None,
    keys: list[str],
) -> str | None:
    ops: list[WriteOp] = []
    predicted: dict[str, str] = {}  # ref -> local versionId the op will get
    meta: dict[str, Any] = {}
    conflicts_changed = False
    seen: set[str] = set()
    newest = _parse_instant(watermark) if watermark else None
    for r in resources:
        report.fetched += 1
        rid = r.get("id")
        rmeta = r.get("meta") or {}
        rv = rmeta.get("versionId")
        lu = rmeta.get("lastUpdated")
        if lu and (newest is None or _parse_instant(lu) > newest):
            newest, watermark = _parse_instant(lu), lu
        if not rid or not rv:
            continue
        ref = f"{rtype}/{rid}"
        if ref in seen or store.get_meta(remote_key(rtype, rid)) == rv:
            report.unchanged += 1
            continue
        seen.add(ref)
        local_cur = store.current_version(rtype, rid)
        local_changed = local_cur is not None and local_cur != store.get_meta(local_key(rtype, rid))
        if local_changed:
            if policy == "flag":
                if ref not in open_conflicts or open_conflicts[ref].get("remote_version") != rv:
                    open_conflicts[ref] = {
                        "local_version": local_cur,
                        "remote_version": rv,
                        "remote_last_updated": lu,
                        "detected": _format_instant(datetime.now(UTC)),
                    }
                    report.conflicts.append(ref)
                    conflicts_changed = True
                continue
            if policy == "local-wins":
                meta[remote_key(rtype, rid)] = rv
                report.local_wins += 1
                continue
            report.remote_wins += 1
        if ref in open_conflicts:
            del open_conflicts[ref]
            conflicts_changed = True
        ops.append(WriteOp("update", rtype, id=rid, resource=r, origin="remote"))
        predicted[ref] = str(int(local_cur) + 1) if local_cur and local_cur.isdigit() else "1"
        meta[remote_key(rtype, rid)] = rv
        meta[local_key(rtype, rid)] = predicted[ref]
        if local_cur is None:
            report.created += 1
        else:
            report.updated += 1
    if watermark and wkey:
        meta[wkey] = watermark
        if wkey not in keys:
            keys.append(wkey)
            meta[PULL_KEYS] = list(keys)
    if conflicts_changed:
        meta[CONFLICTS] = dict(open_conflicts)
    results = _commit_with_meta(store, ops, meta)
    fixes = {
        local_key(res.resource_type, res.id): res.version_id
        for res in results
        if predicted.get(f"{res.resource_type}/{res.id}") != res.version_id
    }
    _set_meta(store, fixes)
    return watermark


def pull_resource(
    store: Store,
    client: FhirClient,
    resource_type: str,
    id: str,
    *,
    version: str | None = None,
    policy: Policy = "flag",
) -> PullReport:
    """Bring one resource from the server unless the store already holds remote `version`
    of it (or a later one): what a notification names is then at least as new locally as
    the notification. A read, so never an answer from a search cache; conflicts are settled
    under `policy` as in `pull`. No watermark moves."""
    report = PullReport()
    seen = str(store.get_meta(remote_key(resource_type, id)) or "")
    if version and seen.isdigit() and version.isdigit() and int(seen) >= int(version):
        report.unchanged += 1
        return report
    try:
        resource = client.read(resource_type, id)
    except (NotFound, Gone):
        return report
    _merge_page(store, resource_type, [resource], policy, conflicts(store), report, None, None, [])
    return report


def resolve(
    store: Store,
    client: FhirClient,
    resource_type: str,
    id: str,
    keep: Literal["local", "remote"],
) -> None:
    """Close a flagged conflict, keeping the local or the remote version."""
    ref = f"{resource_type}/{id}"
    open_conflicts = conflicts(store)
    if ref not in open_conflicts:
        raise NotFound(f"no open sync conflict for {ref}")
    open_conflicts.pop(ref)
    if keep == "remote":
        remote = client.read(resource_type, id)
        op = WriteOp("update", resource_type, id=id, resource=remote, origin="remote")
        [res] = store.commit([op])
        _set_meta(
            store,
            {
                remote_key(resource_type, id): (remote.get("meta") or {}).get("versionId"),
                local_key(resource_type, id): res.version_id,
                CONFLICTS: open_conflicts,
            },
        )
        return
    # keep local: the held local version (behind the push watermark) or deletion is sent
    # now, against the server's current version (a newer edit there fails it again), and
    # both versions are recorded as in sync.
    meta: dict[str, Any] = {CONFLICTS: open_conflicts}
    current, _ = remote_state(client, resource_type, id)
    if store.exists(resource_type, id):
        local = store.read(resource_type, id)
        change = Change(
            0,
            resource_type,
            id,
            local["meta"]["versionId"],
            False,
            "local",
            local["meta"]["lastUpdated"],
            local,
        )
        expected = {ref: current} if current else None
        answer = client.transaction(push_bundle([change], client.base_url, expected))
        response = (answer.get("entry") or [{}])[0].get("response") or {}
        meta[remote_key(resource_type, id)] = parse_etag(
            response.get("etag")
        ) or version_from_location(response.get("location"))
        meta[local_key(resource_type, id)] = local["meta"]["versionId"]
    else:
        meta[remote_key(resource_type, id)] = client.delete(resource_type, id)
        meta[local_key(resource_type, id)] = store.current_version(resource_type, id)
    _set_meta(store, meta)


def sync_once(
    store: Store,
    client: FhirClient,
    *,
    types: Sequence[str],
    policy: Policy = "flag",
    batch_size: int = 500,
) -> tuple[PullReport, PushReport]:
    """Pull (so remote edits are seen and conflicts flagged), then push."""
    pulled = pull(store, client, types=types, policy=policy)
    pushed = push(store, client, batch_size=batch_size, policy=policy)
    return pulled, pushed


def status(store: Store) -> dict[str, Any]:
    """Outbox size, watermarks and open conflicts."""
    todo, held, _, read, last = pending_changes(store)
    keys = store.get_meta(PULL_KEYS, []) or []
    return {
        "pending": len(todo),
        "held": len(held),
        "push_seq": int(store.get_meta(PUSH_SEQ, 0) or 0),
        "last_seq": last,
        "pull": {k: store.get_meta(k) for k in keys},
        "conflicts": conflicts(store),
        "rejected": rejected(store),
    }


# ---- subscriptions ------------------------------------------------------------------------------

SUBSCRIPTION_TAG = "http://fhircare.org/fhir/CodeSystem/subscription-key"


def subscription_key(criteria: str, endpoint: str) -> str:
    """A stable tag code for one (criteria, endpoint) pair."""
    return hashlib.sha256(f"{criteria}\n{endpoint}".encode()).hexdigest()[:32]


RESTHOOK_SETTING = "hapi.fhir.subscription.resthook_enabled"


class SubscriptionNotActive(FhirError):
    """The server accepted the Subscription but did not activate it."""

    status = 503
    code = "not-supported"


def subscribe(
    client: FhirClient,
    *,
    criteria: str = "Encounter?status=finished",
    endpoint: str,
    header: str | None = None,
    timeout: float = 30.0,
    poll: float = 0.5,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Create (once) a rest-hook Subscription and wait until the server activates it.

    R4 Subscription has no identifier, so the (criteria, endpoint) pair is recorded as a
    `meta.tag` and the create is conditional on it (`If-None-Exist: _tag=...`): calling this
    again returns the existing Subscription. `header` (e.g. "Authorization: Bearer s3cret")
    is sent by the server with each notification.

    The status is polled until `timeout`. A Subscription still "requested" then (HAPI keeps
    it so when rest-hook is not enabled, its default) or in "error" is deleted, so nothing
    is left half set up, and SubscriptionNotActive names the setting to turn on.
    """
    code = subscription_key(criteria, endpoint)
    channel: dict[str, Any] = {
        "type": "rest-hook",
        "endpoint": endpoint,
        "payload": "application/fhir+json",
    }
    if header:
        channel["header"] = [header]
    resource = {
        "resourceType": "Subscription",
        "meta": {"tag": [{"system": SUBSCRIPTION_TAG, "code": code}]},
        "status": "requested",
        "reason": "fhircare: transitions of care on discharge",
        "criteria": criteria,
        "channel": channel,
    }
    sub = client.create(resource, if_none_exist=f"_tag={SUBSCRIPTION_TAG}|{code}")
    if sub.get("resourceType") != "Subscription" or "id" not in sub:
        found = client.search_all("Subscription", [("_tag", f"{SUBSCRIPTION_TAG}|{code}")])
        if not found:
            raise NotFound("the server accepted the Subscription but it cannot be found")
        sub = found[0]
    deadline = clock() + timeout
    while sub.get("status") != "active":
        if sub.get("status") == "error" or clock() >= deadline:
            raise SubscriptionNotActive(_not_active(client, sub, timeout))
        sleep(poll)
        sub = client.read("Subscription", sub["id"])
    return sub


def _not_active(client: FhirClient, sub: dict[str, Any], timeout: float) -> str:
    """Delete a Subscription that did not become active; the reason, in one line."""
    ref = f"Subscription/{sub['id']}"
    if sub.get("status") == "error":
        why = f"{ref} is in error ({sub.get('error') or 'no reason given'})"
    else:
        why = (
            f"{ref} is still '{sub.get('status')}' after {timeout:g} s: enable rest-hook "
            f"Subscriptions on the HAPI server ({RESTHOOK_SETTING}=true; off by default)"
        )
    try:
        client.delete("Subscription", sub["id"])
    except FhirError as exc:
        return f"{why}; deleting it failed ({exc.diagnostics}): delete {ref} yourself"
    return f"{why}; {ref} was deleted"
