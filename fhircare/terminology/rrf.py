"""Reading RxNorm Rich Release Format (RRF) files by their documented column positions.

Column layouts (RxNorm Technical Documentation, section 12; every line ends with a '|'):
- RXNCONSO.RRF: RXCUI|LAT|TS|LUI|STT|SUI|ISPREF|RXAUI|SAUI|SCUI|SDUI|SAB|TTY|CODE|STR|SRL|
  SUPPRESS|CVF
- RXNREL.RRF: RXCUI1|RXAUI1|STYPE1|REL|RXCUI2|RXAUI2|STYPE2|RELA|RUI|SRUI|SAB|SL|DIR|RG|
  SUPPRESS|CVF
- RXNSAT.RRF: RXCUI|LUI|SUI|RXAUI|STYPE|CODE|ATUI|SATUI|ATN|SAB|ATV|SUPPRESS|CVF
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

CONSO, REL, SAT = "RXNCONSO.RRF", "RXNREL.RRF", "RXNSAT.RRF"
COLUMNS = {CONSO: 18, REL: 16, SAT: 13}


class RrfError(ValueError):
    """A release that cannot be read: a missing file or a malformed line."""


@dataclass(frozen=True, slots=True)
class Release:
    """The three files of an unpacked RxNorm release (found at any depth under a folder)."""

    conso: Path
    rel: Path
    sat: Path

    @classmethod
    def find(cls, folder: Path) -> Release:
        if not folder.is_dir():
            raise RrfError(f"{folder} is not a folder")
        found: dict[str, Path] = {}
        for path in sorted(folder.rglob("*")):
            name = path.name.upper()
            if name in COLUMNS and name not in found and path.is_file():
                found[name] = path
        missing = [n for n in COLUMNS if n not in found]
        if missing:
            raise RrfError(f"{folder}: no {', '.join(missing)} (an unpacked RxNorm release)")
        return cls(found[CONSO], found[REL], found[SAT])

    def total_bytes(self) -> int:
        return sum(p.stat().st_size for p in (self.conso, self.rel, self.sat))


def rows(
    path: Path, columns: int, advance: Callable[[int], None] | None = None
) -> Iterator[list[str]]:
    """The fields of each line; `advance(bytes)` reports progress as lines are read."""
    with path.open("rb") as f:
        for n, raw in enumerate(f, 1):
            if advance is not None:
                advance(len(raw))
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            if not line:
                continue
            fields = line.split("|")
            if len(fields) == columns + 1 and fields[-1] == "":
                fields.pop()
            if len(fields) != columns:
                raise RrfError(
                    f"{path.name} line {n}: {len(fields)} fields, expected {columns} "
                    f"(RRF lines end with '|')"
                )
            yield fields
