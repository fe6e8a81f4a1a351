"""The embedded store: TinyDB tables in memory, made durable by a journal and snapshots.

Tables (TinyDB, string document ids):
* `<Type>`: the current version of each resource, keyed by id
  (`{"id", "vid", "lu", "deleted", "seq"}`);
* `<Type>._history`: every version, keyed by `id/vid`, with the resource body;
* `_meta`: small durable values (sync watermarks, processed events, the last seq).

Every commit is prepared in full (checks included), appended to the journal and fsynced,
and only then applied to the TinyDB tables: a failed commit changes nothing, and an
acknowledged one survives a kill -9 (see `journal.py`).

Concurrency (group commit): writers take turns preparing and appending their records (the
commit lock), each on top of the records written before it but not yet durable (an
overlay only writers see); then one of the waiting writers fsyncs for all of them and
applies their records, in order, to what readers see. Readers take only the short lock
of that apply step, never wait for an fsync, and never see a write before it is durable;
a commit returns once its own record is durable and applied. A commit that deletes, that
writes a SearchParameter, or that compacts first waits until everything written before it
is applied (integrity checks and reindexing read the applied indexes). A failed fsync
leaves what was written in doubt: the store then refuses every further write
(`StoreFailed`) until it is opened again, which replays what the journal holds.

Shared (`shared=True`, the workers of `fhircare serve --workers N`): the journal is the
truth every worker follows. A writer takes the journal's cross-process write lock, applies
what the other workers appended since (indexes and SearchParameters included), and keeps
the lock until its process's written commits are durable and applied (group commit stays
within a process). After each fsync the writer publishes the journal's durable offset
(`journal.Durable`, a mapped file): a read first catches up, without any lock, to that
offset when it moved (a memory read, no syscall), so it never waits for another worker's
fsync, and a client reads its writes through any worker (a write is published before it is
acknowledged). Only after a compaction does it catch up under the write lock shared.
Conditional writes take a lock over the whole group (`conditional`).

Commits are applied to the tables' documents directly, by the same code that replays the
journal, instead of through TinyDB's write path, which rebuilds a whole table per operation.
The snapshot is a plain TinyDB JSON database. Search indexes (`index.py`: references and
terms, per type) are built at write time from the registry's SearchParameter expressions
and narrow every search; the store's own `SearchRegistry` adds the active SearchParameter
resources it holds (a new one reindexes the types it applies to). Deleting a resource that
live resources reference is refused with 409 (referential integrity, on by default as in
HAPI), or cascades when asked. Reads copy through orjson (`fhircare.fhir.jsonio`), several
times faster than `copy.deepcopy`; stored versions are never changed in place.

Packed types (`PACKED`: AuditEvent, about two per request in `serve`) keep each version's
resource as one bytes object of compact JSON (`jsonio.pack`) instead of nested dicts, and
decode it on every read: a tenth of the memory, and nothing for Python's cyclic collector
to walk (see `benchmarks/bench_audit_memory.py`). The journal and the snapshot write those
bytes as they are (the journal after each record's JSON, so that a worker following it, or a
replay, keeps them as bytes; the snapshot inside its JSON, packed again as it is read). A
packed type's bodies are always fresh objects, so its reads copy nothing more.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tinydb import TinyDB
from tinydb.storages import MemoryStorage
from tinydb.table import Table

from fhircare.fhir import jsonio, registry
from fhircare.fhir.errors import Conflict, Gone, NotFound, PreconditionFailed
from fhircare.fhir.meta import without_server_meta
from fhircare.fhir.registry import SearchRegistry
from fhircare.fhir.search import Criterion, execute, parse_query
from fhircare.store.base import Change, SearchResult, WriteOp, WriteResult, new_id
from fhircare.store.index import Keys, SearchIndex
from fhircare.store.journal import GroupLock, Journal, Record, apply_record

META = "_meta"
# Records about other resources that must outlive them: their references never block a delete
# (HAPI's enforce_referential_integrity_on_delete_disable_for_paths serves the same end).
INTEGRITY_EXEMPT = frozenset({"AuditEvent", "Provenance"})
# Indexed at the first search that needs them (`index.py`): the server writes an AuditEvent
# per patient a request touches, and they are seldom searched.
DEFERRED_INDEX = frozenset({"AuditEvent"})
# Held as packed JSON bytes (see above): written often, read seldom.
PACKED = frozenset({"AuditEvent"})
HISTORY = "._history"
DEFAULT_COMPACT_BYTES = 64 * 1024 * 1024

log = logging.getLogger("fhircare")


class StoreFailed(OSError):
    """The journal could not be made durable: the store takes no more writes until it is
    opened again (the outcome of the writes in flight is known only after replay)."""


@dataclass
class _Written:
    """A commit written to the journal, waiting for its fsync and its apply."""

    number: int  # commits written since the store opened: the ticket a writer waits on
    seq: int
    record: Record
    # (table, id) -> (index keys of the version it replaces, of the new one); None: none
    keys: dict[tuple[str, str], tuple[Keys | None, Keys | None]]


class _Pending:
    """A commit handed to the thread that prepares and writes the queued ones."""

    __slots__ = ("ops", "meta", "results", "wait_for", "error", "done")

    def __init__(self, ops: list[WriteOp], meta: dict[str, Any] | None) -> None:
        self.ops = ops
        self.meta = meta
        self.results: list[WriteResult] = []
        self.wait_for = 0
        self.error: BaseException | None = None
        self.done = False


class KeyedTable(Table):
    """A TinyDB table whose document ids are strings chosen by us."""

    document_id_class = str  # type: ignore[assignment]


class KeyedTinyDB(TinyDB):
    table_class = KeyedTable


def _instant(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class EmbeddedStore:
    """A durable single-process FHIR store on TinyDB."""

    # Reads are memory lookups that never wait for I/O (only for the short apply of a
    # durable commit): an API edge may serve them on its event loop, without a thread hop.
    memory_reads = True

    def __init__(
        self,
        folder: Path | str,
        *,
        fsync: bool = True,
        compact_bytes: int = DEFAULT_COMPACT_BYTES,
        referential_integrity: bool = True,
        packed: Iterable[str] = PACKED,
        shared: bool = False,
    ) -> None:
        self.folder = Path(folder)
        self._packed = frozenset(packed)
        self._packed_history = frozenset(t + HISTORY for t in self._packed)
        self._shared = shared
        self._journal = Journal(self.folder, fsync=fsync, shared=shared)
        # shared: the write lock's file descriptor while this process holds it, and the
        # writers inside a commit that need it held
        self._xfd: int | None = None
        self._xusers = 0
        self._follow_lock = threading.Lock()
        self.conditional: Any = GroupLock(self.folder / "CONDITIONAL") if shared else None
        load_lock = self._journal.write_lock(True) if shared else None
        try:
            with _collector_paused():  # millions of new objects, none of them garbage
                tables, self._seq = self._journal.load(self._packed_history)
        finally:
            if load_lock is not None:
                self._journal.unlock(load_lock)
        # `_lock`: what readers see (held to read, and to apply durable commits);
        # `_commit_lock`: writers preparing and appending, one at a time;
        # `_flush`: the queue of written commits and the one writer that syncs them.
        self._lock = threading.RLock()
        self._commit_lock = threading.RLock()
        self._flush = threading.Condition(threading.Lock())
        self._flushing = False
        self._queue: list[_Written] = []
        # commits waiting for the thread that prepares and writes them (`commit`)
        self._combine = threading.Condition(threading.Lock())
        self._combining = False
        self._pending: list[_Pending] = []
        self._overlay: dict[str, dict[str, Any]] = {}  # written, not yet applied
        self._written_number = 0
        self._applied_number = 0
        self._failed: BaseException | None = None
        self.referential_integrity = referential_integrity
        self._registry = SearchRegistry(registry.R4)
        self._install(tables, self._seq)
        self._compact_bytes = compact_bytes
        self._snapshotting: threading.Thread | None = None  # writing a snapshot (compaction)
        self._last_instant = datetime.now(UTC) - timedelta(days=1)
        self._closed = False

    def _install(self, tables: dict[str, dict[str, Any]], seq: int) -> None:
        """Serve `tables` (as loaded): the SearchParameters they hold, and the indexes."""
        self._db = KeyedTinyDB(storage=MemoryStorage)
        self._db.storage.memory = tables  # type: ignore[attr-defined]
        self._mem = tables
        self._seq = self._written_seq = seq
        for rid in self._registry.custom_ids():
            self._registry.set_custom(rid, None)
        for rid, cur in tables.get("SearchParameter", {}).items():
            if not cur["deleted"]:
                self._registry.set_custom(rid, self._body("SearchParameter", cur))
        self._index = SearchIndex(
            self._registry, deferred=DEFERRED_INDEX, body=self.body, version_body=self._version_body
        )
        for name in list(tables):
            if not name.endswith(HISTORY) and name != META:
                for rid, cur in tables[name].items():
                    if cur["deleted"]:
                        continue
                    if name in DEFERRED_INDEX:  # indexed at its first search, not decoded now
                        self._index.touch(name, rid, None)
                    else:
                        self._index.add(name, rid, self._body(name, cur))

    # ---- time and ids ---------------------------------------------------------------------

    def _now(self) -> datetime:
        """A strictly increasing timestamp at millisecond precision."""
        now = datetime.now(UTC).replace(microsecond=(datetime.now(UTC).microsecond // 1000) * 1000)
        if now <= self._last_instant:
            now = self._last_instant + timedelta(milliseconds=1)
        self._last_instant = now
        return now

    @staticmethod
    def new_id() -> str:
        return new_id()

    # ---- reads ------------------------------------------------------------------------------

    def _table(self, name: str) -> Table:
        return self._db.table(name)

    def _current(self, resource_type: str, id: str) -> dict[str, Any] | None:
        return self._mem.get(resource_type, {}).get(id)

    def _version_doc(self, resource_type: str, id: str, vid: str) -> dict[str, Any] | None:
        return self._mem.get(resource_type + HISTORY, {}).get(f"{id}/{vid}")

    def _version_body(self, resource_type: str, id: str, vid: str) -> dict[str, Any] | None:
        doc = self._version_doc(resource_type, id, vid)
        return None if doc is None or doc["deleted"] else self._resource(resource_type, doc)

    def _resource(self, resource_type: str, doc: dict[str, Any]) -> dict[str, Any]:
        """A version's resource, not copied; a packed type's decoded (always fresh)."""
        body = doc["resource"]
        if isinstance(body, bytes):
            return jsonio.unpack(body)  # type: ignore[no-any-return]
        return jsonio.copy(body) if resource_type in self._packed else body  # type: ignore

    def _resource_copy(self, resource_type: str, doc: dict[str, Any]) -> dict[str, Any]:
        """A version's resource the caller may keep and change."""
        body = self._resource(resource_type, doc)
        return body if resource_type in self._packed else jsonio.copy(body)

    def _written(self, table: str, key: str) -> dict[str, Any] | None:
        """A document as writers see it: the latest written, applied or not."""
        doc = self._overlay.get(table, {}).get(key)
        return doc if doc is not None else self._mem.get(table, {}).get(key)

    def read(self, resource_type: str, id: str) -> dict[str, Any]:
        self._follow()
        with self._lock:
            cur = self._current(resource_type, id)
            if cur is None:
                raise NotFound(f"Resource {resource_type}/{id} is not known")
            if cur["deleted"]:
                raise Gone(f"Resource {resource_type}/{id} was deleted (version {cur['vid']})")
            doc = self._version_doc(resource_type, id, cur["vid"])
            assert doc is not None
        return self._resource_copy(resource_type, doc)  # stored versions never change

    def vread(self, resource_type: str, id: str, version_id: str) -> dict[str, Any]:
        self._follow()
        with self._lock:
            doc = self._version_doc(resource_type, id, version_id)
            if doc is None:
                raise NotFound(f"Version {version_id} of {resource_type}/{id} is not known")
            if doc["deleted"]:
                raise Gone(f"Version {version_id} of {resource_type}/{id} is a deletion")
        return self._resource_copy(resource_type, doc)

    def exists(self, resource_type: str, id: str) -> bool:
        self._follow()
        with self._lock:
            cur = self._current(resource_type, id)
            return cur is not None and not cur["deleted"]

    def current_version(self, resource_type: str, id: str) -> str | None:
        self._follow()
        with self._lock:
            cur = self._current(resource_type, id)
            return None if cur is None else cur["vid"]

    def resource_types(self) -> list[str]:
        self._follow()
        with self._lock:
            return sorted(n for n in self._db.tables() if not n.endswith(HISTORY) and n != META)

    @property
    def registry(self) -> SearchRegistry:
        """The search parameters, the store's own SearchParameters included (shared: as
        the journal has them now)."""
        self._follow()
        return self._registry

    def _follow(self) -> None:
        """(Shared) catch up with what the other workers made durable, when the offset they
        publish moved: without a lock, up to that offset (never waiting for another worker's
        fsync); after a compaction, under the write lock shared."""
        # Not inside the read lock (a search's engine reads `registry` there, having caught
        # up on the way in): a writer of this process applies under it, holding the write lock.
        if (
            not self._shared
            or self._xfd is not None
            or self._lock._is_owned()  # type: ignore[attr-defined]  # Condition uses it
            or not self._journal.behind()
        ):
            return
        with self._follow_lock:
            if self._xfd is not None:  # a writer of this process catches up under it
                return
            records = self._journal.follow_durable(self._packed_history)
            if records is not None:
                self._apply_followed(records)
                return
        fd = self._journal.write_lock(False)
        try:
            self._catch_up()
        finally:
            self._journal.unlock(fd)

    def _catch_up(self) -> None:
        """(Shared, write lock held, nothing of this process pending) apply the records the
        other workers appended, in order, indexes and SearchParameters included."""
        with self._follow_lock:
            records = self._journal.follow(self._packed_history)
            if records is None:  # compacted more than once since: the snapshot is newer
                with self._lock, _collector_paused():
                    self._install(*self._journal.reload(self._packed_history))
                return
            self._apply_followed(records)

    def _apply_followed(self, records: list[Record]) -> None:
        """(Follow lock held) apply the other workers' records, in order."""
        if not records:
            return
        with self._lock:
            for record in records:
                tables = record["tables"]
                keys: dict[tuple[str, str], tuple[Keys | None, Keys | None]] = {}
                for name, docs in tables.items():
                    if name.endswith(HISTORY) or name == META:
                        continue
                    for rid, cur in docs.items():
                        new = None
                        if name not in DEFERRED_INDEX and not cur["deleted"]:
                            version = tables[name + HISTORY][f"{rid}/{cur['vid']}"]
                            new = self._index.keys(name, self._resource(name, version))
                        keys[(name, rid)] = (None, new)
                number = self._applied_number
                self._apply([_Written(number, record["seq"], record, keys)])
                self._written_seq = max(self._written_seq, record["seq"])
            self._follow_instants(records)

    def _follow_instants(self, records: list[Record]) -> None:
        """Keep `_now` ahead of the lastUpdated the other workers wrote (one order of
        versions across the group)."""
        latest = max(
            (
                doc["lu"]
                for record in records
                for name, docs in record["tables"].items()
                if name.endswith(HISTORY)
                for doc in docs.values()
            ),
            default=None,
        )
        if latest is not None:
            instant = datetime.fromisoformat(latest.replace("Z", "+00:00"))
            self._last_instant = max(self._last_instant, instant)

    def _share_begin(self) -> None:
        """(Commit lock held; shared) hold the write lock for this commit, caught up."""
        if not self._shared:
            return
        with self._flush:
            self._xusers += 1
            held = self._xfd is not None
        if held:
            return
        try:
            fd = self._journal.write_lock(True)
        except BaseException:
            self._share_end()
            raise
        with self._flush:
            self._xfd = fd
        try:
            self._catch_up()
        except BaseException:
            self._share_end()
            raise

    def _share_end(self) -> None:
        if not self._shared:
            return
        with self._flush:
            self._xusers -= 1
            self._release_if_idle()

    def _release_if_idle(self) -> None:
        """(`_flush` held) release the write lock once nothing of this process is written
        but not yet durable and applied, and no commit is being prepared."""
        if self._xfd is not None and not self._xusers and not self._queue and not self._flushing:
            self._journal.unlock(self._xfd)
            self._xfd = None

    def _body(self, resource_type: str, cur: dict[str, Any]) -> dict[str, Any]:
        return self._resource(
            resource_type, self._mem[resource_type + HISTORY][f"{cur['id']}/{cur['vid']}"]
        )

    def _live(self, resource_type: str) -> Iterator[dict[str, Any]]:
        """Live resources of a type (raw, not copied)."""
        for cur in self._mem.get(resource_type, {}).values():
            if not cur["deleted"]:
                yield self._body(resource_type, cur)

    # ---- the SearchSource the search engine runs on -------------------------------------------

    def live_ids(self, resource_type: str) -> list[str]:
        return [i for i, cur in self._mem.get(resource_type, {}).items() if not cur["deleted"]]

    def body(self, resource_type: str, id: str) -> dict[str, Any] | None:
        cur = self._mem.get(resource_type, {}).get(id)
        if cur is None or cur["deleted"]:
            return None
        return self._body(resource_type, cur)

    def order(self, resource_type: str, ids: Iterable[str]) -> list[str]:
        current = self._mem.get(resource_type, {})
        return sorted(ids, key=lambda i: current[i]["seq"])

    def candidates(
        self, resource_type: str, crit: Criterion, within: set[str] | None = None
    ) -> set[str] | None:
        return self._index.candidates(resource_type, crit, within)

    def referrers(self, resource_type: str, key: str, within: set[str] | None = None) -> set[str]:
        return self._index.referrers(resource_type, key, within)

    def candidate_count(self, resource_type: str, crit: Criterion) -> int | None:
        return self._index.candidate_count(resource_type, crit)

    def referrer_count(self, resource_type: str, key: str) -> int:
        return self._index.referrer_count(resource_type, key)

    def iter_resources(self, resource_type: str) -> Iterator[dict[str, Any]]:
        self._follow()
        with self._lock:
            items = list(self._live(resource_type))
        if resource_type in self._packed:  # decoded afresh already
            yield from items
        else:
            yield from (jsonio.copy(r) for r in items)

    def count(self, resource_type: str) -> int:
        self._follow()
        with self._lock:
            return sum(1 for cur in self._mem.get(resource_type, {}).values() if not cur["deleted"])

    def search(self, resource_type: str, params: list[tuple[str, str]]) -> list[dict[str, Any]]:
        return self.search_page(resource_type, params).resources

    def search_page(
        self,
        resource_type: str,
        params: list[tuple[str, str]],
        *,
        offset: int = 0,
        count: int | None = None,
    ) -> SearchResult:
        self._follow()
        query = parse_query(resource_type, params, registry_=self._registry)
        with self._lock:
            found = execute(self, query)
        end = None if count is None else offset + count
        if resource_type in self._packed:  # decoded afresh already
            page = found[offset:end]
        else:
            page = [jsonio.copy(r) for r in found[offset:end]]
        return SearchResult(total=len(found), resources=page)

    def referenced_by(self, resource_type: str, id: str) -> list[str]:
        """'Type/id' of every live resource holding a reference to this one."""
        key = f"{resource_type}/{id}"
        self._follow()
        with self._lock:
            return sorted(
                f"{t}/{h}"
                for t, holders in self._index.referrer_types(key)
                for h in holders
                if (t, h) != (resource_type, id)
            )

    def history(
        self,
        resource_type: str | None = None,
        id: str | None = None,
        since: str | None = None,
    ) -> list[dict[str, Any]]:
        self._follow()
        with self._lock:
            if resource_type and id:
                cur = self._current(resource_type, id)
                if cur is None:
                    raise NotFound(f"Resource {resource_type}/{id} is not known")
                docs = [
                    self._version_doc(resource_type, id, str(v))
                    for v in range(int(cur["vid"]), 0, -1)
                ]
                pairs = [(resource_type, d) for d in docs if d is not None]
            else:
                types = [resource_type] if resource_type else self.resource_types()
                pairs = [(t, d) for t in types for d in self._table(t + HISTORY)]
                pairs.sort(key=lambda p: p[1]["seq"], reverse=True)
            if since:
                pairs = [p for p in pairs if p[1]["lu"] >= since]
            return [self._history_entry(t, d) for t, d in pairs]

    def _history_entry(self, resource_type: str, doc: dict[str, Any]) -> dict[str, Any]:
        url = f"{resource_type}/{doc['id']}"
        method = {"create": "POST", "update": "PUT", "delete": "DELETE"}[doc["method"]]
        entry: dict[str, Any] = {
            "fullUrl": url,
            "request": {"method": method, "url": resource_type if method == "POST" else url},
            "response": {
                "status": {"POST": "201 Created", "PUT": "200 OK", "DELETE": "204 No Content"}[
                    method
                ],
                "etag": f'W/"{doc["vid"]}"',
                "lastModified": doc["lu"],
            },
        }
        if not doc["deleted"]:
            entry["resource"] = self._resource_copy(resource_type, doc)
        return entry

    def changes(self, after_seq: int, limit: int | None = None) -> list[Change]:
        self._follow()
        with self._lock:
            out = [
                Change(
                    seq=d["seq"],
                    resource_type=t[: -len(HISTORY)],
                    id=d["id"],
                    version_id=d["vid"],
                    deleted=d["deleted"],
                    origin=d["origin"],
                    last_updated=d["lu"],
                    resource=None if d["deleted"] else self._resource_copy(t[: -len(HISTORY)], d),
                )
                for t in self._db.tables()
                if t.endswith(HISTORY)
                for d in self._table(t)
                if d["seq"] > after_seq
            ]
        out.sort(key=lambda c: c.seq)
        return out[:limit] if limit is not None else out

    @property
    def last_seq(self) -> int:
        self._follow()
        return self._seq

    def get_meta(self, key: str, default: Any = None) -> Any:
        self._follow()
        with self._lock:
            doc = self._mem.get(META, {}).get(key)
            return default if doc is None else jsonio.copy(doc["value"])

    # ---- writes -----------------------------------------------------------------------------

    def set_meta(self, key: str, value: Any) -> None:
        self.set_meta_many({key: value})

    def set_meta_many(self, values: dict[str, Any]) -> None:
        """Set several durable values in one commit."""
        self.commit([], meta=values)

    def commit(self, ops: list[WriteOp], meta: dict[str, Any] | None = None) -> list[WriteResult]:
        """Apply every op or none, durably; `meta` values are written in the same commit.

        A delete with `cascade` also deletes, in the same commit, every live resource that
        references the deleted one (recursively). With referential integrity on, a commit
        that would leave a live resource referencing a deleted one raises Conflict (409)."""
        if self._commit_lock._is_owned():  # type: ignore[attr-defined]  # inside a commit
            batch = [_Pending(ops, meta)]
            self._commit_batch(batch)
            mine = batch[0]
        else:
            mine = _Pending(ops, meta)
            batch = None
            # Combining: the commits that queue while one thread prepares and appends are
            # then prepared and appended by one thread, one after another (each its own
            # record, in arrival order), instead of handing the commit lock and with it the
            # GIL from thread to thread, a wait each while the event loop holds it.
            with self._combine:
                self._pending.append(mine)
                while not mine.done and self._combining:
                    self._combine.wait()
                if not mine.done:
                    self._combining = True
                    batch, self._pending = self._pending, []
            if batch is not None:
                try:
                    self._commit_batch(batch)
                finally:
                    with self._combine:
                        for pending in batch:
                            pending.done = True
                        self._combining = False
                        self._combine.notify_all()
        if mine.error is not None:
            raise mine.error
        self._wait_durable(mine.wait_for)
        return mine.results

    def _commit_batch(self, batch: list[_Pending]) -> None:
        """Prepare and write each commit of `batch`, in order, under the commit lock: its
        results or its error on each."""
        with self._commit_lock:
            try:
                if self._closed:
                    raise RuntimeError("store is closed")
                self._check_usable()
                self._share_begin()
            except BaseException as exc:
                for pending in batch:
                    pending.error = exc
                return
            try:
                for pending in batch:
                    try:
                        self._check_usable()
                        pending.results, pending.wait_for = self._commit_locked(
                            pending.ops, pending.meta
                        )
                    except BaseException as exc:  # that commit's own error, for its caller
                        pending.error = exc
            finally:
                self._share_end()

    def _commit_locked(
        self, ops: list[WriteOp], meta: dict[str, Any] | None
    ) -> tuple[list[WriteResult], int]:
        """(Commit lock held) prepare and write a commit: its results and the number of the
        written commit to wait for."""
        if self._journal.journal_bytes > self._compaction_due_at():
            self._compact_in_background()
        if any(op.method == "delete" or op.resource_type == "SearchParameter" for op in ops):
            self._settle()  # integrity checks and reindexing read the applied state
        ops = self._with_cascades(ops)
        now = _instant(self._now())
        seq = self._written_seq
        pending: dict[tuple[str, str], dict[str, Any]] = {}  # overlay of current docs
        tables: dict[str, dict[str, Any]] = {}
        results: list[WriteResult] = []
        for op in ops:
            result, cur_doc, version_doc = self._prepare(op, pending, now, seq + 1)
            if version_doc is None:  # no-op: delete of an absent resource, unchanged update
                results.append(result)
                continue
            seq += 1
            key = (op.resource_type, result.id)
            pending[key] = cur_doc
            tables.setdefault(op.resource_type, {})[result.id] = cur_doc
            tables.setdefault(op.resource_type + HISTORY, {})[
                f"{result.id}/{result.version_id}"
            ] = version_doc
            results.append(result)
        if self.referential_integrity:
            self._check_integrity(tables)
        if meta:
            tables.setdefault(META, {}).update(
                {k: {"id": k, "value": jsonio.copy(v)} for k, v in meta.items()}
            )
        if tables:
            self._write(tables, seq)
        wait_for = self._written_number  # a no-op answers from writes that must be durable
        return results, wait_for

    def _with_cascades(self, ops: list[WriteOp]) -> list[WriteOp]:
        """The ops, with a delete of every resource that references a cascading delete."""
        if not any(op.method == "delete" and op.cascade for op in ops):
            return ops
        out = list(ops)
        seen = {(op.resource_type, op.id) for op in ops if op.method == "delete"}
        queue = [(op.resource_type, op.id) for op in ops if op.method == "delete" and op.cascade]
        while queue:
            rtype, rid = queue.pop()
            for holder in self.referenced_by(rtype, rid or ""):
                htype, hid = holder.split("/", 1)
                if htype not in INTEGRITY_EXEMPT and (htype, hid) not in seen:
                    seen.add((htype, hid))
                    out.append(WriteOp("delete", htype, id=hid))
                    queue.append((htype, hid))
        return out

    def _check_integrity(self, tables: dict[str, dict[str, Any]]) -> None:
        """Refuse a commit after which a live resource would reference a deleted one."""
        deleted = {
            f"{rtype}/{rid}"
            for rtype, docs in tables.items()
            if not rtype.endswith(HISTORY) and rtype != META
            for rid, doc in docs.items()
            if doc["deleted"]
        }
        if not deleted:
            return
        written = {
            (rtype, rid): doc
            for rtype, docs in tables.items()
            if not rtype.endswith(HISTORY) and rtype != META
            for rid, doc in docs.items()
        }
        new_refs = {
            (htype, hid): self._index.reference_keys(
                htype, self._resource(htype, tables[htype + HISTORY][f"{hid}/{doc['vid']}"])
            )
            for (htype, hid), doc in written.items()
            if not doc["deleted"]
        }
        problems: list[str] = []
        for target in sorted(deleted):
            holders = set()
            with self._lock:  # the index is read (and may catch up) under the read lock
                for htype, ids in self._index.referrer_types(target, skip=INTEGRITY_EXEMPT):
                    holders |= {(htype, h) for h in ids if (htype, h) not in written}
            holders |= {
                key
                for key, refs in new_refs.items()
                if target in refs and key[0] not in INTEGRITY_EXEMPT
            }
            holders.discard(tuple(target.split("/", 1)))  # type: ignore[arg-type]
            if holders:
                names = ", ".join(f"{t}/{i}" for t, i in sorted(holders)[:20])
                more = f" and {len(holders) - 20} more" if len(holders) > 20 else ""
                problems.append(f"{target} is referenced by {names}{more}")
        if problems:
            raise Conflict(
                "Unable to delete: " + "; ".join(problems) + ". Delete or update the "
                "referencing resources first (or delete with _cascade=delete where enabled)",
                code="processing",
            )

    def _prepare(
        self,
        op: WriteOp,
        pending: dict[tuple[str, str], dict[str, Any]],
        now: str,
        seq: int,
    ) -> tuple[WriteResult, dict[str, Any], dict[str, Any] | None]:
        rtype = op.resource_type
        if op.method == "create":
            rid = op.id if (op.keep_id and op.id) else self.new_id()
        else:
            if not op.id:
                raise ValueError(f"{op.method} needs an id")
            rid = op.id
        cur = pending.get((rtype, rid)) or self._written(rtype, rid)
        if op.method == "create" and cur is not None:
            raise Conflict(f"Resource {rtype}/{rid} already exists")
        if op.if_match is not None:
            if cur is None or cur["deleted"]:
                raise PreconditionFailed(
                    f"If-Match {op.if_match}: {rtype}/{rid} has no current version"
                )
            if cur["vid"] != op.if_match:
                raise PreconditionFailed(
                    f"If-Match version {op.if_match} does not match the current version "
                    f"{cur['vid']} of {rtype}/{rid}"
                )
        if op.method == "update" and cur and not cur["deleted"] and op.resource is not None:
            current = self._written_body(rtype, cur) if (rtype, rid) not in pending else None
            if current is not None and _same_content(current, op.resource):
                # A no-op update keeps the version, as HAPI does (nothing to sync either).
                result = WriteResult(
                    rtype, rid, cur["vid"], cur["lu"], resource=jsonio.copy(current)
                )
                return result, cur, None
        vid = str(int(cur["vid"]) + 1) if cur else "1"
        deleted = op.method == "delete"
        if deleted and (cur is None or cur["deleted"]):
            result = WriteResult(rtype, rid, cur["vid"] if cur else "0", now, deleted=True)
            return result, cur or {}, None
        resource = None
        if not deleted:
            assert op.resource is not None
            resource = op.resource if op.handed_over else jsonio.copy(op.resource)
            resource["resourceType"] = rtype
            resource["id"] = rid
            meta = dict(resource.get("meta") or {})
            meta["versionId"] = vid
            meta["lastUpdated"] = now
            resource["meta"] = meta
        stored: dict[str, Any] | bytes | None = resource
        if resource is not None and rtype in self._packed:
            stored = jsonio.pack(resource) or resource
        cur_doc = {"id": rid, "vid": vid, "lu": now, "deleted": deleted, "seq": seq}
        version_doc = {
            "id": rid,
            "vid": vid,
            "lu": now,
            "deleted": deleted,
            "seq": seq,
            "origin": op.origin,
            "method": op.method,
            "resource": stored,
        }
        keep = op.handed_over or stored is not resource  # packed: the dict is not kept
        result = WriteResult(
            rtype,
            rid,
            vid,
            now,
            created=cur is None or bool(cur.get("deleted")),
            deleted=deleted,
            resource=resource if keep else jsonio.copy(resource),
        )
        return result, cur_doc, version_doc

    def _write(self, tables: dict[str, dict[str, Any]], seq: int) -> None:
        """Append a commit to the journal (not yet durable) and queue it for its fsync; the
        index keys it needs are computed here, so applying it is only map updates."""
        meta = tables.setdefault(META, {})
        meta["_store"] = {"id": "_store", "value": {"seq": seq}}
        record = {"seq": seq, "tables": tables}
        keys: dict[tuple[str, str], tuple[Keys | None, Keys | None]] = {}
        for name, docs in tables.items():
            if name.endswith(HISTORY) or name == META:
                continue
            for rid, cur in docs.items():
                if name in DEFERRED_INDEX:  # indexed when a search needs it
                    keys[(name, rid)] = (None, None)
                    continue
                old = self._written(name, rid)
                old_keys = None
                if old is not None and not old["deleted"]:
                    old_keys = self._index.keys(name, self._written_body(name, old))
                new_keys = None
                if not cur["deleted"]:
                    body = self._resource(name, tables[name + HISTORY][f"{rid}/{cur['vid']}"])
                    new_keys = self._index.keys(name, body)
                keys[(name, rid)] = (old_keys, new_keys)
        try:
            self._journal.write(record)
        except OSError as exc:
            if self._journal.damaged:
                self._failed = exc
            raise
        with self._flush:  # the overlay changes under this lock (the applier trims it)
            for name, docs in tables.items():
                self._overlay.setdefault(name, {}).update(docs)
            self._written_number += 1
            self._queue.append(_Written(self._written_number, seq, record, keys))
            self._written_seq = seq

    def _written_body(self, resource_type: str, cur: dict[str, Any]) -> dict[str, Any]:
        doc = self._written(resource_type + HISTORY, f"{cur['id']}/{cur['vid']}")
        assert doc is not None
        return self._resource(resource_type, doc)

    def _check_usable(self) -> None:
        if self._failed is not None:
            raise StoreFailed(
                f"the store's journal could not be made durable ({self._failed}); "
                "it takes no more writes until it is opened again"
            )

    def _wait_durable(self, number: int) -> None:
        """Return once the commits written up to `number` are durable and applied: the
        first waiting writer fsyncs and applies for all that are queued (group commit)."""
        with self._flush:
            while self._applied_number < number:
                self._check_usable()
                if self._flushing:
                    self._flush.wait()
                    continue
                batch, self._queue = self._queue, []
                self._flushing = True
                self._flush.release()
                try:
                    self._journal.sync()
                    with self._lock:
                        self._apply(batch)
                except BaseException as exc:
                    self._failed = exc
                    raise
                finally:
                    self._flush.acquire()
                    self._flushing = False
                    if self._shared:
                        self._release_if_idle()
                    self._flush.notify_all()

    def _settle(self) -> None:
        """(Commit lock held) wait until everything written so far is applied."""
        self._wait_durable(self._written_number)

    def _apply(self, batch: list[_Written]) -> None:
        """(Read lock held) make durable commits visible, in order, with their indexes."""
        for written in batch:
            tables = written.record["tables"]
            reindex: set[str] = set()
            fresh = self._registry.version
            for (name, rid), (old_keys, _) in written.keys.items():
                old = self._mem.get(name, {}).get(rid)
                if name in DEFERRED_INDEX:
                    live = old is not None and not old["deleted"]
                    self._index.touch(name, rid, old["vid"] if live else None)
                elif old is not None and not old["deleted"]:
                    if old_keys is None or old_keys.registry_version != fresh:
                        old_keys = self._index.keys(name, self._body(name, old))
                    self._index.remove_keys(name, rid, old_keys)
            apply_record(self._mem, written.record)
            with self._flush:  # what is applied leaves the overlay, unless written over since
                for name, docs in tables.items():
                    overlay = self._overlay.get(name, {})
                    for doc_id, doc in docs.items():
                        if overlay.get(doc_id) is doc:
                            del overlay[doc_id]
            for rid, cur in tables.get("SearchParameter", {}).items():
                body = None if cur["deleted"] else self._body("SearchParameter", cur)
                reindex |= self._registry.set_custom(rid, body)
            for (name, rid), (_, new_keys) in written.keys.items():
                if new_keys is None or name in reindex or name in DEFERRED_INDEX:
                    continue
                if new_keys.registry_version != self._registry.version:
                    new_keys = self._index.keys(name, self._body(name, tables[name][rid]))
                self._index.add_keys(name, rid, new_keys)
            for name in sorted(reindex):
                self._index.rebuild(
                    name,
                    (
                        (i, self._body(name, c))
                        for i, c in self._mem.get(name, {}).items()
                        if not c["deleted"]
                    ),
                )
            for name in tables:
                self._table(name).clear_cache()
            with self._flush:
                self._seq = written.seq
                self._applied_number = written.number

    def _compaction_due_at(self) -> int:
        """Journal bytes past which a commit compacts first: `compact_bytes`, or the last
        snapshot's size when that is larger. A snapshot rewrites the whole store, so waiting
        for a journal as large as it keeps the cost of compaction in proportion to what is
        written (not to the store's size times the commits), and the stall of each one rare
        as the store grows; a restart replays at most that much journal."""
        return max(self._compact_bytes, self._journal.snapshot_bytes)

    def compact(self, *, background: bool = False) -> None:
        """Write a snapshot of every table and empty the journal; with `background`, as a
        due commit does (the snapshot written in a thread: `wait_for_snapshot`)."""
        with self._commit_lock:
            self._share_begin()
            try:
                if background:
                    self._compact_in_background()
                else:
                    self._compact_locked()
            finally:
                self._share_end()

    def _compact_locked(self) -> None:
        """(Commit lock held) settle what is written, then snapshot, once no snapshot is
        being written (here or by another worker): nothing is pending, so the journal holds
        nothing the snapshot lacks, and readers need not wait."""
        self._settle()
        token = self._journal.snapshot_lock(wait=True)
        assert token is not None
        try:
            self._journal.write_snapshot(self._mem)
        except OSError as exc:
            if self._journal.damaged:
                self._failed = exc
            raise
        finally:
            self._journal.unlock(token)

    def _compact_in_background(self) -> None:
        """(Commit lock held, from a commit) compact without holding writers up for the
        snapshot: settle, set the journal aside (new commits go on into a fresh one) and
        write the snapshot of the store as it stands, in a thread. Nothing when a snapshot
        is being written (here or by another worker); a journal a failed or interrupted
        snapshot left aside is kept, and the snapshot written now covers it.

        The thread reads shallow copies of the tables, taken here: a stored document is
        never changed in place (a commit puts new ones in), so they hold this moment's
        state while commits go on."""
        if self._snapshotting is not None and self._snapshotting.is_alive():
            return
        token = self._journal.snapshot_lock(wait=False)
        if token is None:
            return
        try:
            self._settle()
            if not self._journal.previous_path.exists():
                self._journal.rotate()
            view = {name: dict(docs) for name, docs in self._mem.items()}
        except BaseException as exc:
            self._journal.unlock(token)
            if self._journal.damaged:
                self._failed = exc
                raise
            if not isinstance(exc, OSError):
                raise
            log.warning("compaction did not start (%s); the journal keeps every commit", exc)
            return
        thread = threading.Thread(
            target=self._snapshot_then_unlock, args=(view, token), name="fhircare-snapshot"
        )
        self._snapshotting = thread
        thread.start()

    def wait_for_snapshot(self) -> None:
        """Return once no snapshot this store started is being written."""
        thread = self._snapshotting
        if thread is not None:
            thread.join()

    def _snapshot_then_unlock(self, view: dict[str, dict[str, Any]], token: int) -> None:
        """(The snapshot thread) write the snapshot of `view`, then let the next one go."""
        try:
            self._journal.finish_snapshot(view)
        except Exception as exc:  # noqa: BLE001 - the journal still holds every commit
            log.warning("the snapshot was not written (%s); the next compaction tries again", exc)
        finally:
            self._journal.unlock(token)

    def close(self) -> None:
        with self._commit_lock:
            if self._closed:
                return
            self.wait_for_snapshot()  # a snapshot being written finishes first
            if self._failed is None:
                self._share_begin()
                try:
                    self._settle()
                    if self._journal.journal_bytes or self._journal.previous_path.exists():
                        self._compact_locked()
                finally:
                    self._share_end()
            self._journal.close()
            self._closed = True


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """No cyclic collection meanwhile: loading a store allocates so many containers that
    the collector would walk the growing heap again and again (half of the load time)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _same_content(current: dict[str, Any], new: dict[str, Any]) -> bool:
    """True when `new` equals the stored version but for server-kept meta elements."""

    def strip(resource: dict[str, Any]) -> dict[str, Any]:
        body = without_server_meta(resource)
        body.pop("id", None)
        body.pop("resourceType", None)
        return body

    return strip(current) == strip(new)
