"""A local RxNorm index: built once from a release's RRF files into SQLite, read by code.

What it answers, for RxNorm concepts of the release (SAB=RXNORM, SUPPRESS=N):
- an ingredient (IN), precise ingredient (PIN), multiple-ingredient (MIN) or brand name (BN):
  its ingredients;
- a clinical or branded drug (SCD, SBD) or pack (GPCK, BPCK): its ingredients, with each
  ingredient's strength (RXNSAT RXN_STRENGTH of the drug component, else the component's
  name) and precise ingredient, and its dose form.
Relationships are read by the term types they join (SCD-SCDC, SCDC-IN, SCDC-PIN, SCD-DF,
SBD-SCD, BN-IN, PIN-IN, MIN-IN, pack-SCD), in either direction, as RXNREL lists both.
"""

from __future__ import annotations

import os
import re
import sqlite3
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from fhircare.terminology.rrf import COLUMNS, CONSO, REL, SAT, Release, rows

INDEX_FILE = Path("terminology") / "rxnorm.sqlite"
SCHEMA_VERSION = "1"

_KEEP = ("SCD", "SBD", "GPCK", "BPCK", "SCDC", "IN", "PIN", "MIN", "BN", "DF")
_RANK = {tty: n for n, tty in enumerate(_KEEP)}
_RELAS = frozenset(
    {
        "has_ingredient",
        "ingredient_of",
        "has_precise_ingredient",
        "precise_ingredient_of",
        "consists_of",
        "constitutes",
        "has_tradename",
        "tradename_of",
        "has_dose_form",
        "dose_form_of",
        "form_of",
        "has_form",
        "has_part",
        "part_of",
        "contains",
        "contained_in",
        "has_ingredients",
        "ingredients_of",
    }
)
_STRENGTH_TAIL = re.compile(r"\s(\d[\d.]*\s+\S+)$")  # "lisinopril 10 MG" -> "10 MG"


@dataclass(frozen=True, slots=True)
class Component:
    """One ingredient of a concept: its IN code and name, strength text and precise name."""

    rxcui: str
    name: str
    strength: str | None = None
    precise: str | None = None


@dataclass(frozen=True, slots=True)
class Concept:
    rxcui: str
    tty: str
    name: str
    ingredients: tuple[Component, ...]
    dose_form: str | None = None


def index_path(data_dir: Path) -> Path:
    """Where `fhircare terminology load-rxnorm` puts the index of a data folder."""
    return data_dir / INDEX_FILE


def build_index(
    release: Release, target: Path, *, advance: Callable[[int], None] | None = None
) -> dict[str, int]:
    """Read the release and write the index to `target` atomically; returns counts by TTY.

    `advance(bytes)` is called as the files are read (for a progress bar).
    """
    concepts: dict[str, tuple[str, str]] = {}
    for f in rows(release.conso, COLUMNS[CONSO], advance):
        rxcui, lat, sab, tty, name, suppress = f[0], f[1], f[11], f[12], f[14], f[16]
        if sab != "RXNORM" or suppress != "N" or lat != "ENG" or tty not in _RANK:
            continue
        known = concepts.get(rxcui)
        if known is None or _RANK[tty] < _RANK[known[0]]:
            concepts[rxcui] = (tty, name)
    links: dict[tuple[str, str], set[tuple[str, str]]] = defaultdict(set)
    for f in rows(release.rel, COLUMNS[REL], advance):
        a, b, rela, sab = f[0], f[4], f[7], f[10]
        if sab != "RXNORM" or rela not in _RELAS or a == b:
            continue
        ca, cb = concepts.get(a), concepts.get(b)
        if ca is None or cb is None:
            continue
        links[ca[0], cb[0]].add((a, b))
        links[cb[0], ca[0]].add((b, a))
    strengths: dict[str, str] = {}
    for f in rows(release.sat, COLUMNS[SAT], advance):
        rxcui, atn, sab, atv, suppress = f[0], f[8], f[9], f[10], f[11]
        if atn == "RXN_STRENGTH" and sab == "RXNORM" and suppress in ("N", "") and atv:
            strengths.setdefault(rxcui, atv.strip())
    components = _components(concepts, links, strengths)
    forms = _dose_forms(concepts, links)
    counts = _write(target, concepts, components, forms)
    return counts


def _pairs(links: dict[tuple[str, str], set[tuple[str, str]]], a: str, b: str) -> dict[str, set]:
    out: dict[str, set[str]] = defaultdict(set)
    for x, y in links.get((a, b), ()):
        out[x].add(y)
    return out


def _components(
    concepts: dict[str, tuple[str, str]],
    links: dict[tuple[str, str], set[tuple[str, str]]],
    strengths: dict[str, str],
) -> dict[str, list[tuple[str, str | None, str | None]]]:
    """rxcui -> [(IN rxcui, strength text, PIN rxcui)] for every concept that has ingredients."""
    scdc_in = _pairs(links, "SCDC", "IN")
    scdc_pin = _pairs(links, "SCDC", "PIN")
    out: dict[str, list[tuple[str, str | None, str | None]]] = {}
    for scd, scdcs in _pairs(links, "SCD", "SCDC").items():
        parts = []
        for scdc in sorted(scdcs):
            ins = scdc_in.get(scdc) or set()
            if len(ins) != 1:
                parts = []
                break  # a component without exactly one ingredient: not read
            strength = strengths.get(scdc)
            if strength is None:
                m = _STRENGTH_TAIL.search(concepts[scdc][1])
                strength = m.group(1) if m else None
            pins = scdc_pin.get(scdc) or set()
            parts.append((next(iter(ins)), strength, next(iter(pins)) if len(pins) == 1 else None))
        if parts:
            out[scd] = parts
    for sbd, scds in _pairs(links, "SBD", "SCD").items():
        if len(scds) == 1 and next(iter(scds)) in out:
            out[sbd] = out[next(iter(scds))]
    for pack in ("GPCK", "BPCK"):
        for code, scds in _pairs(links, pack, "SCD").items():
            ins = sorted({c[0] for s in scds for c in out.get(s, ())})
            if ins:
                out[code] = [(i, None, None) for i in ins]
    for rxcui, (tty, _) in concepts.items():
        if tty == "IN":
            out[rxcui] = [(rxcui, None, None)]
    for tty in ("PIN", "MIN", "BN"):
        for code, ins in _pairs(links, tty, "IN").items():
            out[code] = [(i, None, code if tty == "PIN" else None) for i in sorted(ins)]
    return out


def _dose_forms(
    concepts: dict[str, tuple[str, str]], links: dict[tuple[str, str], set[tuple[str, str]]]
) -> dict[str, str]:
    out: dict[str, str] = {}
    for tty in ("SCD", "SBD"):
        for code, dfs in _pairs(links, tty, "DF").items():
            if len(dfs) == 1:
                out[code] = concepts[next(iter(dfs))][1]
    for sbd, scds in _pairs(links, "SBD", "SCD").items():
        if sbd not in out and len(scds) == 1 and next(iter(scds)) in out:
            out[sbd] = out[next(iter(scds))]
    return out


def _write(
    target: Path,
    concepts: dict[str, tuple[str, str]],
    components: dict[str, list[tuple[str, str | None, str | None]]],
    forms: dict[str, str],
) -> dict[str, int]:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.unlink(missing_ok=True)
    db = sqlite3.connect(tmp)
    try:
        db.executescript(
            """
            CREATE TABLE concept (rxcui TEXT PRIMARY KEY, tty TEXT NOT NULL, name TEXT NOT NULL);
            CREATE TABLE component (rxcui TEXT NOT NULL, in_rxcui TEXT NOT NULL,
                                    strength TEXT, pin_rxcui TEXT, ord INTEGER NOT NULL);
            CREATE INDEX component_rxcui ON component (rxcui);
            CREATE TABLE doseform (rxcui TEXT PRIMARY KEY, name TEXT NOT NULL);
            CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            """
        )
        db.executemany(
            "INSERT INTO concept VALUES (?, ?, ?)", ((k, t, n) for k, (t, n) in concepts.items())
        )
        db.executemany(
            "INSERT INTO component VALUES (?, ?, ?, ?, ?)",
            (
                (code, i, s, p, n)
                for code, parts in components.items()
                for n, (i, s, p) in enumerate(parts)
            ),
        )
        db.executemany("INSERT INTO doseform VALUES (?, ?)", forms.items())
        counts: dict[str, int] = defaultdict(int)
        for tty, _ in concepts.values():
            counts[tty] += 1
        meta = {
            "schema": SCHEMA_VERSION,
            "built": datetime.now(UTC).isoformat(timespec="seconds"),
            **{f"count.{k}": str(v) for k, v in counts.items()},
        }
        db.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
        db.commit()
    finally:
        db.close()
    os.replace(tmp, target)
    return dict(counts)


class RxNormIndex:
    """Read-only lookups in a built index (thread-safe: one connection per lookup thread)."""

    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise FileNotFoundError(path)
        self.path = path
        self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        meta = dict(self._db.execute("SELECT key, value FROM meta"))
        if meta.get("schema") != SCHEMA_VERSION:
            raise ValueError(f"{path}: index schema {meta.get('schema')!r}; load it again")
        self.meta = meta

    def close(self) -> None:
        self._db.close()

    def concept(self, rxcui: str) -> Concept | None:
        """The concept with its ingredients (names from the index), or None."""
        row = self._db.execute("SELECT tty, name FROM concept WHERE rxcui = ?", (rxcui,)).fetchone()
        if row is None:
            return None
        parts = self._db.execute(
            "SELECT c.in_rxcui, i.name, c.strength, p.name FROM component c "
            "JOIN concept i ON i.rxcui = c.in_rxcui LEFT JOIN concept p ON p.rxcui = c.pin_rxcui "
            "WHERE c.rxcui = ? ORDER BY c.ord",
            (rxcui,),
        ).fetchall()
        form = self._db.execute("SELECT name FROM doseform WHERE rxcui = ?", (rxcui,)).fetchone()
        return Concept(
            rxcui,
            row[0],
            row[1],
            tuple(Component(a, b, c, d) for a, b, c, d in parts),
            form[0] if form else None,
        )

    def names(self) -> list[tuple[str, str, tuple[Component, ...]]]:
        """(name, tty, ingredients) of every IN, PIN and BN: the phrases of free-text names."""
        by_code: dict[str, list[Component]] = defaultdict(list)
        for code, in_code, in_name, pin in self._db.execute(
            "SELECT c.rxcui, c.in_rxcui, i.name, p.name FROM component c "
            "JOIN concept x ON x.rxcui = c.rxcui AND x.tty IN ('IN', 'PIN', 'BN') "
            "JOIN concept i ON i.rxcui = c.in_rxcui LEFT JOIN concept p ON p.rxcui = c.pin_rxcui "
            "ORDER BY c.rxcui, c.ord"
        ):
            by_code[code].append(Component(in_code, in_name, None, pin))
        out = []
        for code, tty, name in self._db.execute(
            "SELECT rxcui, tty, name FROM concept WHERE tty IN ('IN', 'PIN', 'BN')"
        ):
            if by_code.get(code):
                out.append((name, tty, tuple(by_code[code])))
        return out


def open_local_index(data_dir: Path) -> RxNormIndex | None:
    """The index of a data folder, or None when none was loaded there.

    Raises ValueError when the file is there but cannot be used (another schema, damaged).
    """
    path = index_path(data_dir)
    if not path.is_file():
        return None
    try:
        return RxNormIndex(path)
    except sqlite3.Error as exc:
        raise ValueError(f"{path}: not a readable RxNorm index ({exc}); load it again") from exc
