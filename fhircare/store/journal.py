"""Crash-safe persistence for the embedded store: a snapshot plus an append-only journal.

* `snapshot.json` is a plain TinyDB JSON file (every table), replaced atomically
  (write a temporary file, fsync, rename, fsync the folder). It holds one document per
  line (`{"Table":{` / `"id":{...},` / `},"Next":{` ... `}}`), so it is read a document at
  a time: a packed type's resources are packed as they are read, and the whole store never
  exists twice in memory. A document line orjson could not write (an integer beyond 64
  bits) starts with a space and is read by the standard library; a snapshot in another
  layout (one line, as older versions wrote) is read whole, exactly.
* `journal.log` holds one line per commit, `<crc32 hex> <json>\\n`, appended and fsynced
  before the commit is acknowledged (`write` then `sync`: the store lets several commits
  written one after another share one fsync, each acknowledged only once it is durable).
  A commit costs the size of its own changes, not the size of the database. A failed
  append is cut off again, so a later record never follows a partial one.
* Compaction sets the journal aside (`journal.prev`, a second name for it) and goes on in
  a fresh, empty one at once (`rotate`); the snapshot of the store as it stood then is
  written afterwards, by a thread of the store, while new commits go on into the fresh
  journal (`finish_snapshot`), and the set-aside journal is removed once the new snapshot
  is in place. One writer of snapshots at a time (`SNAPSHOT`, a lock file).
* On open the set-aside journal (when there is one), the snapshot and the journal are read
  in that order and replayed (a record the snapshot already holds changes nothing); a torn
  last line (a crash in the middle of an append, never acknowledged) is cut off. A bad line
  followed by good ones is corruption and refuses to open.
* A `LOCK` file held with `flock` makes one process the owner of the folder.
* Shared (`shared=True`: the worker processes of `fhircare serve --workers N`, whose parent
  holds `LOCK` for the group): a second lock file, `WRITE`, held exclusively by the worker
  that catches up, appends and syncs, and shared by one that only catches up (`follow`
  reads the records the others appended since its offset). Compaction renames the fresh,
  empty journal over the old one: a worker still holding the old one reads it to its end,
  then moves on to the new file (a new inode); `GENERATION` counts the compactions, and a
  worker that missed more than one loads again (set-aside journal, snapshot, journal).
* Shared, durable offset (`DURABLE`, a small file every worker maps): after each fdatasync
  the writer publishes the journal's generation and the offset up to which it is durable
  (a sequence counter around the two values, so a reader never takes a torn pair). A
  worker that only reads catches up without any lock, reading whole records up to that
  offset of the journal it holds; only a generation it does not hold (a compaction) sends
  it to the locked path above.
* A journal record orjson wrote carries a mark (`MARK`) and is read back with orjson,
  exactly and several times faster; any other (an integer beyond 64 bits, a record written
  before the mark) with the standard library.
* Packed bodies (a packed type's resources, held as JSON bytes) follow the record's JSON,
  each after a 0x1f byte (`RAW_SEPARATOR`; JSON holds no raw control character), which
  lists where they go (`RAW`) and holds null in their place: a worker catching up, or a
  replay, takes them as the bytes the writer packed instead of decoding and packing them
  again (7% of two workers' CPU at 32 clients). A record without packed bodies is plain
  JSON as before; an older version reads a record with them as damaged.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import mmap
import os
import struct
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from fhircare.fhir import jsonio
from fhircare.fhir.errors import StoreLocked

Tables = dict[str, dict[str, Any]]
# A journal record: {"seq": last seq in the commit, "tables": {table: {doc_id: doc | None}}}
Record = dict[str, Any]


# Shared: how many times the journal was compacted (a worker that finds it grown by more
# than one since it last followed reloads the snapshot).
GENERATION = "GENERATION"


# The journal set aside while its snapshot is written (`Journal.rotate`), and the lock of
# the one writer of snapshots (across the workers of a shared folder too).
PREVIOUS = "journal.prev"
SNAPSHOT_LOCK = "SNAPSHOT"


# Shared: the durable offset the writer publishes (see `Durable`).
DURABLE = "DURABLE"
_DURABLE = struct.Struct("<QQQ")  # sequence (odd while being written), generation, offset
_READ_ATTEMPTS = 1000  # a publish is three small writes: a reader that sees it odd this long
# is looking at a writer that died between them


class Durable:
    """(Shared) the journal's generation and durable offset, in a file every worker maps:
    written by the holder of the exclusive write lock, read by anyone without a lock."""

    def __init__(self, path: Path) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if os.fstat(fd).st_size < _DURABLE.size:
                os.ftruncate(fd, _DURABLE.size)
            self._map = mmap.mmap(fd, _DURABLE.size)
        finally:
            os.close(fd)

    def publish(self, generation: int, offset: int) -> None:
        """(Exclusive write lock held) the journal of `generation` is durable to `offset`."""
        seq = _DURABLE.unpack_from(self._map)[0]
        struct.pack_into("<Q", self._map, 0, seq | 1)
        struct.pack_into("<QQ", self._map, 8, generation, offset)
        struct.pack_into("<Q", self._map, 0, (seq | 1) + 1)

    def read(self) -> tuple[int, int] | None:
        """The generation and durable offset last published (a consistent pair); None when
        none could be read (a writer killed mid-publish leaves the sequence odd until the
        next publish: the caller then takes the locked path instead of spinning)."""
        for _ in range(_READ_ATTEMPTS):
            seq, generation, offset = _DURABLE.unpack_from(self._map)
            if not seq & 1 and _DURABLE.unpack_from(self._map)[0] == seq:
                return generation, offset
        return None

    def close(self) -> None:
        self._map.close()


class CorruptJournal(Exception):
    """The journal has a damaged record that is not the last one."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# The mark of a journal record orjson wrote (it then reads it back exactly, and several
# times faster than the standard library); one without it is read exactly.
MARK = "orjson"


def _loads_record(body: bytes) -> Any:
    """A journal record: by orjson when it carries the mark (dropped here), exactly by the
    standard library otherwise."""
    try:
        value = orjson.loads(body)
    except ValueError:
        value = None
    if isinstance(value, dict) and value.pop(MARK, None) is True:
        return value
    return json.loads(body)


def _pack(table: dict[str, Any]) -> None:
    """Pack the resources of a packed type's history documents (see the embedded store)."""
    for doc in table.values():
        if doc is not None and isinstance(doc.get("resource"), dict):
            doc["resource"] = jsonio.pack(doc["resource"]) or doc["resource"]


def _settle_bodies(record: Record, packed: frozenset[str]) -> None:
    """A record as read: the resources of `packed` tables packed; a packed body in any other
    table (written by a store that packed that type) decoded."""
    for name, table in record["tables"].items():
        if name in packed:
            _pack(table)
            continue
        for doc in table.values():
            if doc is not None and isinstance(doc.get("resource"), bytes):
                doc["resource"] = jsonio.unpack(doc["resource"])


def _snapshot_lines(tables: Tables) -> Iterator[bytes]:
    """The snapshot's JSON, one document per line (the layout `_read_snapshot` reads)."""
    yield b"{"
    for t, (name, docs) in enumerate(tables.items()):
        yield (b"," if t else b"") + jsonio.dumps(name) + b":{"
        for d, (key, doc) in enumerate(docs.items()):
            body = jsonio.dumps_orjson(doc)
            head = b"," if d else b""
            if body is None:  # the standard library's: read back by it (a leading space)
                body, head = jsonio.dumps(doc), head + b"\n "
            else:
                head += b"\n"
            yield head + jsonio.dumps(key) + b":" + body
        yield b"\n}"
    yield b"}\n"


def _read_snapshot(path: Path, packed: frozenset[str]) -> Tables:
    """The snapshot's tables, a document at a time (see the module docstring); the
    resources of `packed` tables packed as they are read."""
    tables: Tables = {}
    with open(path, "rb") as fh:
        first = fh.readline()
        if not (first.startswith(b'{"') and first.endswith(b":{\n")):
            return _read_whole(first + fh.read(), packed)
        name = orjson.loads(first[1:-3])
        table = tables.setdefault(name, {})
        name_packed = name in packed
        for line in fh:
            if line.startswith(b"}"):  # the end of a table, and the next one's name
                if line.startswith(b"},"):
                    name = orjson.loads(line[2:-3])
                    table = tables.setdefault(name, {})
                    name_packed = name in packed
                continue
            item = b"{" + line.rstrip(b",\n") + b"}"
            doc = json.loads(item) if line.startswith(b" ") else orjson.loads(item)
            if name_packed:
                _pack(doc)
            table.update(doc)
    return tables


def _read_whole(data: bytes, packed: frozenset[str]) -> Tables:
    """A snapshot in another layout: read whole, exactly."""
    tables: Tables = json.loads(data)
    for name in packed & tables.keys():
        _pack(tables[name])
    return tables


# Packed bodies (a version's resource held as JSON bytes) follow a record's JSON, each after
# this byte, instead of inside it: a reader takes them as the bytes they are, never decoding
# and packing them again. The JSON lists where they go (`RAW`: [table, doc id] in order) and
# holds null in their place. JSON written by orjson never holds a raw control character.
RAW_SEPARATOR = b"\x1f"
RAW = "raw"


def _encode(record: Record) -> bytes:
    raw: list[bytes] = []
    places: list[list[str]] = []
    tables: dict[str, Any] = {}
    for name, docs in record["tables"].items():
        out = docs
        for doc_id, doc in docs.items():
            if doc is not None and isinstance(doc.get("resource"), bytes):
                if out is docs:
                    out = dict(docs)
                out[doc_id] = {**doc, "resource": None}
                raw.append(doc["resource"])
                places.append([name, doc_id])
        tables[name] = out
    body = None
    if raw:
        skeleton = jsonio.dumps_orjson({**record, "tables": tables, RAW: places, MARK: True})
        if skeleton is not None:
            body = RAW_SEPARATOR.join([skeleton, *raw])
    if body is None:
        body = jsonio.dumps_orjson({**record, MARK: True}) or jsonio.dumps(record)
    return b"%08x " % zlib.crc32(body) + body + b"\n"


def _decode(line: bytes) -> Record | None:
    if not line.endswith(b"\n") or len(line) < 10 or line[8:9] != b" ":
        return None
    body = line[9:-1]
    try:
        if int(line[:8], 16) != zlib.crc32(body):
            return None
        if RAW_SEPARATOR not in body:
            return _loads_record(body)  # type: ignore[no-any-return]
        skeleton, *raw = body.split(RAW_SEPARATOR)
        record: Record = _loads_record(skeleton)
        places = record.pop(RAW)
        if len(places) != len(raw):
            return None
        tables = record["tables"]
        for (name, doc_id), data in zip(places, raw, strict=True):
            tables[name][doc_id]["resource"] = data
        return record
    except (ValueError, KeyError, TypeError):
        return None


def apply_record(tables: Tables, record: Record) -> None:
    """Apply one journal record to in-memory tables."""
    for name, docs in record["tables"].items():
        table = tables.setdefault(name, {})
        for doc_id, doc in docs.items():
            if doc is None:
                table.pop(doc_id, None)
            else:
                table[doc_id] = doc


def _replay(
    lines: list[bytes], path: Path, tables: Tables, packed: frozenset[str]
) -> tuple[int, int]:
    """Apply a journal's records (its lines) to `tables`, in order: the length of its whole
    records and the last seq among them. A torn last line (a crash in the middle of an append, never
    acknowledged) ends it; a damaged line before others is corruption.

    Every record is replayed: a journal holds only what came after the snapshot before this
    one, so a record the snapshot already holds (a crash between the snapshot and removing
    the journal) ends in the same state. A record that only sets meta values shares the seq
    of the last change before it, so the seq cannot tell which records are new."""
    good_end = last_seq = 0
    for i, line in enumerate(lines):
        record = _decode(line)
        if record is None:
            if i == len(lines) - 1:
                break
            raise CorruptJournal(f"{path}: record {i + 1} of {len(lines)} is damaged")
        good_end += len(line)
        _settle_bodies(record, packed)
        apply_record(tables, record)
        last_seq = max(last_seq, record["seq"])
    return good_end, last_seq


class Journal:
    """Owns a data folder: lock, snapshot and journal."""

    def __init__(self, folder: Path, *, fsync: bool = True, shared: bool = False) -> None:
        self.folder = folder
        self.fsync = fsync
        self.shared = shared
        folder.mkdir(parents=True, exist_ok=True)
        self._lock_file: Any = None if shared else lock_folder(folder)
        # shared: the cross-process write lock (EX to write, SH to catch up), one file
        # description per use so that the threads of one process exclude each other too
        self._write_lock_path = folder / "WRITE"
        self._rfd: int | None = None  # shared: reads what the other workers append
        self.generation = 0  # shared: the journal's compactions, as this worker follows it
        self.durable: Durable | None = Durable(folder / DURABLE) if shared else None
        self.snapshot_path = folder / "snapshot.json"
        self.journal_path = folder / "journal.log"
        self.previous_path = folder / PREVIOUS
        self._snapshot_lock_path = folder / SNAPSHOT_LOCK
        self._fd: int | None = None
        self.journal_bytes = 0
        self.snapshot_bytes = 0  # size of the last snapshot written or loaded
        self.damaged = False

    def load(self, packed: frozenset[str] = frozenset()) -> tuple[Tables, int]:
        """Snapshot plus replayed journal, and the last committed seq; the resources in the
        `packed` tables are packed as they are read."""
        tables: Tables = {}
        # The journal set aside for a snapshot being written (or that a crash interrupted) is
        # opened before the snapshot is: a snapshot finished meanwhile (renamed in, then the
        # set-aside journal removed) is then read with it, never without it.
        previous = self._read_previous()
        if self.snapshot_path.exists():
            tables = _read_snapshot(self.snapshot_path, packed)
            self.snapshot_bytes = self.snapshot_path.stat().st_size
        meta = tables.get("_meta", {}).get("_store", {})
        last_seq = int(meta.get("value", {}).get("seq", 0)) if meta else 0
        if previous:  # the records the snapshot may lack, first
            last_seq = max(last_seq, _replay(previous, self.previous_path, tables, packed)[1])
        good_end = 0
        if self.journal_path.exists():
            with open(self.journal_path, "rb") as fh:
                lines = fh.readlines()
            good_end, seq = _replay(lines, self.journal_path, tables, packed)
            last_seq = max(last_seq, seq)
            if good_end != self.journal_path.stat().st_size:
                with open(self.journal_path, "r+b") as fh:
                    fh.truncate(good_end)
                    os.fsync(fh.fileno())
        self.journal_bytes = good_end
        self._fd = os.open(self.journal_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if good_end == 0:
            _fsync_dir(self.folder)
        if self.shared:
            self._rfd = os.open(self.journal_path, os.O_RDONLY)
            self.generation = self._read_generation()
            assert self.durable is not None
            self.durable.publish(self.generation, good_end)  # loaded under the write lock
        return tables, last_seq

    def reload(self, packed: frozenset[str] = frozenset()) -> tuple[Tables, int]:
        """(Shared, write lock held) `load` again: the snapshot and the current journal."""
        for fd in (self._fd, self._rfd):
            if fd is not None:
                os.close(fd)
        self._fd = self._rfd = None
        return self.load(packed)

    def _read_generation(self) -> int:
        """(Shared) compactions of this folder's journal so far (`GENERATION`)."""
        try:
            return int((self.folder / GENERATION).read_text() or 0)
        except (OSError, ValueError):
            return 0

    # ---- shared: several worker processes on one folder ------------------------------------

    def write_lock(self, exclusive: bool) -> int:
        """(Shared) take the cross-process write lock, blocking; `unlock` releases it."""
        fd = os.open(self._write_lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        except BaseException:
            os.close(fd)
            raise
        return fd

    @staticmethod
    def unlock(fd: int) -> None:
        os.close(fd)  # closing the file description releases its flock

    def behind(self) -> bool:
        """(Shared) whether the published durable offset or generation moved past this
        worker's (no syscall: a read of the mapped `DURABLE`)."""
        assert self.durable is not None
        published = self.durable.read()
        if published is None:
            return True
        generation, offset = published
        return generation != self.generation or offset > self.journal_bytes

    def follow_durable(self, packed: frozenset[str] = frozenset()) -> list[Record] | None:
        """(Shared, no lock; nothing of this process written but not durable) the records
        the others made durable since this worker's offset, read from the journal it holds;
        None when the journal was compacted since, or no offset could be read (the caller
        takes the locked `follow`)."""
        assert self.durable is not None and self._rfd is not None
        published = self.durable.read()
        if published is None or published[0] != self.generation:
            return None
        end = published[1]
        if end <= self.journal_bytes:
            return []
        data = os.pread(self._rfd, end - self.journal_bytes, self.journal_bytes)
        records = self._records(data, packed)
        self.journal_bytes += len(data)
        return records

    def _records(self, data: bytes, packed: frozenset[str]) -> list[Record]:
        """Whole records (the bytes end at a record's end), the packed tables packed."""
        records: list[Record] = []
        for line in data.splitlines(keepends=True):
            record = _decode(line)
            if record is None:  # a writer holds the lock until its record is whole
                raise CorruptJournal(f"{self.journal_path}: a damaged record")
            _settle_bodies(record, packed)
            records.append(record)
        return records

    def follow(self, packed: frozenset[str] = frozenset()) -> list[Record] | None:
        """(Shared, write lock held) the records the other workers appended since this one
        last read or wrote, across a compaction (the old journal read to its end, then the
        new one from its start); afterwards this worker appends to the current journal.
        None when the journal was compacted more than once since: the caller `reload`s."""
        assert self._rfd is not None and self._fd is not None
        records: list[Record] = []
        while True:
            end = os.fstat(self._rfd).st_size
            if end > self.journal_bytes:
                data = os.pread(self._rfd, end - self.journal_bytes, self.journal_bytes)
                records.extend(self._records(data, packed))
                self.journal_bytes = end
            st = os.stat(self.journal_path)
            if st.st_ino == os.fstat(self._rfd).st_ino:
                return records
            # compacted by another worker: the new journal continues where this one ended,
            # unless it was compacted again since (the journal in between is gone)
            generation = self._read_generation()
            if generation != self.generation + 1:
                return None
            self.generation = generation
            os.close(self._rfd)
            os.close(self._fd)
            self._rfd = os.open(self.journal_path, os.O_RDONLY)
            self._fd = os.open(self.journal_path, os.O_WRONLY | os.O_APPEND)
            self.journal_bytes = 0
            with contextlib.suppress(OSError):
                self.snapshot_bytes = self.snapshot_path.stat().st_size

    def append(self, record: Record) -> None:
        """Append one commit and make it durable."""
        self.write(record)
        self.sync()

    def write(self, record: Record) -> None:
        """Append one commit, not yet durable (`sync` makes every written record durable).
        A failed write raises OSError with the partial record cut off again; when even
        that fails, `damaged` is set and the journal must not be written any more."""
        assert self._fd is not None, "journal not loaded"
        data = _encode(record)
        written = 0
        try:
            while written < len(data):
                written += os.write(self._fd, data[written:])
        except OSError:
            if written:
                try:
                    os.ftruncate(self._fd, self.journal_bytes)
                except OSError:
                    self.damaged = True
                    raise
            raise
        self.journal_bytes += len(data)

    def sync(self) -> None:
        """Make every record written so far durable (fdatasync; a no-op without fsync)."""
        assert self._fd is not None, "journal not loaded"
        end = self.journal_bytes  # what was written before the fdatasync
        if self.fsync:
            os.fdatasync(self._fd)
        if self.durable is not None:
            self.durable.publish(self.generation, end)

    def _read_previous(self) -> list[bytes] | None:
        """The set-aside journal's lines (`rotate`), or None when there is none."""
        try:
            with open(self.previous_path, "rb") as fh:
                return fh.readlines()
        except FileNotFoundError:
            return None

    def snapshot_lock(self, wait: bool) -> int | None:
        """Take the lock of the one writer of snapshots (`SNAPSHOT`: across the workers of
        a shared folder too): its file descriptor for `unlock`, or None when another holds
        it and `wait` is false. Its holder alone sets the journal aside, writes the
        snapshot and removes the set-aside journal."""
        fd = os.open(self._snapshot_lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        return fd

    def rotate(self) -> None:
        """(Snapshot lock held, no journal set aside; everything written durable and
        applied; shared: write lock held) set the journal aside as `journal.prev`, for the
        snapshot about to be written (`finish_snapshot`), and go on in a fresh, empty one.

        The fresh journal is renamed over the old one (a worker still reading the old one
        reads it to its end, then moves on: `follow`), so the old records are never
        without a name: a crash at any point leaves the set-aside journal, the journal, or
        both naming them, and `load` replays both. Past the rename the journal must not be
        written any more when a step fails (`damaged`)."""
        assert self._fd is not None, "journal not loaded"
        fresh = self.folder / "journal.log.tmp"
        fd = os.open(fresh, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            if self.fsync:
                os.fsync(fd)
            os.link(self.journal_path, self.previous_path)
            os.replace(fresh, self.journal_path)
        except BaseException:
            os.close(fd)
            raise
        old, self._fd, self.journal_bytes = self._fd, fd, 0
        os.close(old)
        try:
            if self.shared:
                self.generation += 1
                counter = self.folder / (GENERATION + ".tmp")
                counter.write_text(str(self.generation))
                os.replace(counter, self.folder / GENERATION)
            _fsync_dir(self.folder)
            if self.shared:
                assert self.durable is not None and self._rfd is not None
                self.durable.publish(self.generation, 0)
                os.close(self._rfd)
                self._rfd = os.open(self.journal_path, os.O_RDONLY)
        except BaseException:
            self.damaged = True
            raise

    def finish_snapshot(self, tables: Tables) -> None:
        """(Snapshot lock held) replace the snapshot atomically with `tables` (a state at
        least as recent as the set-aside journal's end, and no more recent than what the
        journal holds), then remove the set-aside journal. Needs no other lock: nothing
        else of the journal or the store is touched."""
        tmp = self.folder / "snapshot.json.tmp"
        size = 0
        try:
            with open(tmp, "wb") as fh:
                for line in _snapshot_lines(tables):
                    fh.write(line)
                    size += len(line)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.snapshot_path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(self.folder)
        self.previous_path.unlink(missing_ok=True)
        _fsync_dir(self.folder)
        self.snapshot_bytes = size

    def write_snapshot(self, tables: Tables) -> None:
        """(Snapshot lock held; everything written durable and applied; shared: write lock
        held) snapshot `tables`, the whole store, and go on in an empty journal."""
        if not self.previous_path.exists():
            self.rotate()
        self.finish_snapshot(tables)
        if self.journal_bytes:  # a journal set aside before, and records after it
            self.rotate()
            self.previous_path.unlink()
            _fsync_dir(self.folder)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._rfd is not None:
            os.close(self._rfd)
            self._rfd = None
        if self.durable is not None:
            self.durable.close()
            self.durable = None
        if self._lock_file is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_UN)
            self._lock_file.close()


class GroupLock:
    """A reentrant lock over the worker processes of one folder: a thread RLock plus an
    exclusive `flock` on `path` while the outermost holder holds it."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._local = threading.RLock()
        self._depth = 0
        self._fd: int | None = None

    def __enter__(self) -> GroupLock:
        self._local.acquire()
        if self._depth == 0:
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except BaseException:
                os.close(fd)
                self._local.release()
                raise
            self._fd = fd
        self._depth += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        if self._depth == 0 and self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._local.release()


def lock_folder(folder: Path) -> Any:
    """Make this process (and the children it forks, which inherit the file) the owner of
    `folder`: the open `LOCK` file, held with `flock`; StoreLocked when another holds it."""
    folder.mkdir(parents=True, exist_ok=True)
    lock_file = open(folder / "LOCK", "a+")  # noqa: SIM115 - held for the lifetime
    try:
        fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        lock_file.close()
        raise StoreLocked(
            f"the data folder {folder} is in use by another fhircare process "
            "(one process owns a store; stop the other one or use --data)"
        ) from exc
    return lock_file
