"""HL7 v2 ER7 plumbing: bytes -> text, MSH checks, a flat view of segments, timestamps.

Parsing itself is python-hl7 (`hl7` on PyPI); this module normalises what real feeds send
(BOM, LF or CRLF segment ends, MLLP framing bytes, MSH-18 charsets), validates MSH-1/MSH-2
before the library sees them, and turns the library's ragged containers into plain
repetition -> component -> subcomponent lists of unescaped strings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import hl7
import yaml

from fhircare.paths import mappings_dir

AckCode = Literal["AA", "AE", "AR"]

MAPPINGS_FILE = mappings_dir() / "hl7v2.yaml"


class Hl7Error(Exception):
    """A message the receiver refuses: becomes an AE/AR ACK with an ERR segment.

    `error_code` is an HL7 table 0357 code; `segment`/`field` locate the fault (ERR-2).
    """

    def __init__(
        self,
        reason: str,
        code: AckCode = "AE",
        *,
        segment: str | None = None,
        field: int | None = None,
        error_code: str = "207",
        sequence: int = 1,
        component: int | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code
        self.segment = segment
        self.field = field
        self.error_code = error_code
        self.sequence = sequence
        self.component = component

    def __repr__(self) -> str:
        where = f" at {self.segment}-{self.field}" if self.segment and self.field else ""
        return f"Hl7Error({self.code} {self.error_code}{where}: {self.reason})"


@lru_cache(maxsize=4)
def load_tables(path: Path = MAPPINGS_FILE) -> dict[str, Any]:
    """The declarative tables in mappings/hl7v2.yaml (cached)."""
    with path.open(encoding="utf-8") as fh:
        return yaml.safe_load(fh)


# --- bytes -> text -------------------------------------------------------------------------

_BOM = b"\xef\xbb\xbf"


def sniff_charset(raw: bytes) -> str | None:
    """MSH-18 (first repetition) read from the raw bytes, or None."""
    start = raw.find(b"MSH")
    if start < 0 or len(raw) < start + 4:
        return None
    head = raw[start:]
    end = min((i for i in (head.find(b"\r"), head.find(b"\n")) if i >= 0), default=len(head))
    sep = head[3:4]
    fields = head[:end].split(sep)
    # fields[0] is "MSH", fields[1] is MSH-2, so MSH-n is fields[n - 1].
    if len(fields) < 18:
        return None
    rep = fields[1][1:2] or b"~"
    value = fields[17].split(rep)[0].strip()
    return value.decode("ascii", "replace") or None


def codec_for(charset: str | None) -> str:
    """Python codec for an MSH-18 value (default UTF-8)."""
    if not charset:
        return "utf-8"
    return load_tables()["charsets"].get(charset.strip().upper(), "utf-8")


def decode_er7(raw: bytes | str) -> tuple[str, str]:
    """Decode a message: (text, codec used). Declared charset, then UTF-8, then latin-1."""
    if isinstance(raw, str):
        return raw.lstrip("\ufeff"), "utf-8"
    if raw.startswith(_BOM):
        raw = raw[len(_BOM) :]
    declared = codec_for(sniff_charset(raw))
    for codec in dict.fromkeys((declared, "utf-8")):
        try:
            return raw.decode(codec), codec
        except (UnicodeDecodeError, LookupError):
            continue
    return raw.decode("latin-1"), "latin-1"


def normalize(text: str) -> str:
    """CR-separated segments; BOM, MLLP bytes, blank lines and leading junk removed."""
    text = text.lstrip("\ufeff").strip("\x0b\x1c\r\n\t ")
    segments = [s for s in re.split(r"\r\n|\r|\n", text) if s.strip()]
    return "\r".join(segments)


def check_msh(text: str) -> None:
    """Refuse a message whose header the parser cannot trust (AR)."""
    if not text.startswith("MSH"):
        raise Hl7Error(
            "message does not start with an MSH segment",
            "AR",
            segment="MSH",
            error_code="100",
        )
    if len(text) < 8:
        raise Hl7Error("MSH segment is truncated", "AR", segment="MSH", error_code="100")
    field_sep = text[3]
    end = text.find(field_sep, 4)
    enc = text[4:end] if end > 0 else text[4:].split("\r")[0]
    problems = []
    if field_sep.isalnum() or field_sep.isspace():
        problems.append(f"field separator {field_sep!r} is not a delimiter")
    if len(enc) not in (4, 5):
        problems.append(f"{len(enc)} encoding characters (4 expected, 5 with truncation)")
    if len(set(enc)) != len(enc):
        problems.append("duplicate encoding characters")
    if field_sep in enc or any(c.isalnum() or c.isspace() for c in enc):
        problems.append("encoding characters overlap data or the field separator")
    if problems:
        raise Hl7Error(
            f"MSH-2 encoding characters {enc} are invalid: {'; '.join(problems)}",
            "AR",
            segment="MSH",
            field=2,
            error_code="102",
        )


# --- a flat, unescaped view of python-hl7 containers ---------------------------------------

Rep = list[list[str]]  # components -> subcomponents

_HEX = re.compile(r"X([0-9A-Fa-f]*)")


class Er7Message:
    """A parsed ER7 message with unescaped, whitespace-trimmed access by HL7 position."""

    def __init__(self, text: str, codec: str = "utf-8") -> None:
        self.text = text
        self.codec = codec
        try:
            self._msg = hl7.parse(text)
        except Exception as exc:  # python-hl7 raises several types on garbage
            raise Hl7Error(f"unparseable message: {exc}", "AR", error_code="102") from exc
        self.esc = self._msg.esc
        self.segments = [Segment(self, seg) for seg in self._msg]

    def first(self, name: str) -> Segment | None:
        return next((s for s in self.segments if s.name == name), None)

    def all(self, name: str) -> list[Segment]:
        return [s for s in self.segments if s.name == name]

    def unescape(self, value: str) -> str:
        """Decode escape sequences (\\F\\ \\S\\ \\T\\ \\R\\ \\E\\ \\Xhh..\\ ...) of one leaf.

        Hex runs are decoded here as bytes in the message charset (python-hl7 maps each byte
        to one code point, which breaks multi-byte UTF-8); other sequences go to the library.
        """
        esc = self.esc
        if esc not in value:
            return value
        out: list[str] = []
        plain: list[str] = []

        def flush() -> None:
            if plain:
                out.append(self._msg.unescape("".join(plain)))
                plain.clear()

        i = 0
        while i < len(value):
            if value[i] != esc:
                plain.append(value[i])
                i += 1
                continue
            j = value.find(esc, i + 1)
            if j < 0:  # unterminated escape: keep the rest as it is
                flush()
                out.append(value[i:])
                break
            hexm = _HEX.fullmatch(value[i + 1 : j])
            if hexm and len(hexm.group(1)) % 2 == 0:
                flush()
                data = bytes.fromhex(hexm.group(1))
                try:
                    out.append(data.decode(self.codec))
                except UnicodeDecodeError:
                    out.append(data.decode("latin-1"))
            else:
                plain.append(value[i : j + 1])
            i = j + 1
        flush()
        return "".join(out)


class Segment:
    """One segment; `reps(n)` / `get(n, c, s)` use HL7 field numbers (MSH-3 is n=3)."""

    def __init__(self, message: Er7Message, seg: Any) -> None:
        self._message = message
        self._seg = seg
        self.name = str(seg[0]).strip()

    def reps(self, n: int) -> list[Rep]:
        """Non-empty repetitions of field n as components -> subcomponents (1-based lists)."""
        try:
            field = self._seg[n]
        except IndexError:
            return []
        reps: list[Rep] = []
        for raw_rep in _repetitions(field):
            rep = [[self._leaf(s) for s in comp] for comp in raw_rep]
            if any(s for comp in rep for s in comp):
                reps.append(rep)
        return reps

    def get(self, n: int, comp: int = 1, sub: int = 1, rep: int = 0) -> str:
        """One value (first repetition by default); '' when absent."""
        reps = self.reps(n)
        return component(reps[rep], comp, sub) if len(reps) > rep else ""

    def _leaf(self, value: Any) -> str:
        text = str(value).strip()
        if text == '""':  # HL7 explicit null: treated as empty
            return ""
        return self._message.unescape(text).strip()


def component(rep: Rep, comp: int, sub: int = 1) -> str:
    """Component `comp`, subcomponent `sub` (1-based) of a repetition; '' when absent."""
    if len(rep) < comp or len(rep[comp - 1]) < sub:
        return ""
    return rep[comp - 1][sub - 1]


def _repetitions(field: Any) -> list[list[list[Any]]]:
    """python-hl7 nests unevenly (a bare value is Field([str])); make it regular."""
    if isinstance(field, str):
        return [[[field]]]
    if all(isinstance(x, str) for x in field):
        return [[["".join(field)]]]
    reps = []
    for rep in field:
        if isinstance(rep, str):
            reps.append([[rep]])
            continue
        reps.append([[c] if isinstance(c, str) else list(c) for c in rep])
    return reps


# --- escaping (for text we write into ACKs) -----------------------------------------------


def escape(text: str, field_sep: str = "|", enc: str = "^~\\&") -> str:
    """Escape delimiters so free text is safe inside one ER7 field."""
    comp, rep, esc, sub = enc[0], enc[1], enc[2], enc[3]
    text = text.replace(esc, f"{esc}E{esc}")
    for ch, code in ((field_sep, "F"), (comp, "S"), (sub, "T"), (rep, "R")):
        text = text.replace(ch, f"{esc}{code}{esc}")
    return text.replace("\r", " ").replace("\n", " ")


# --- timestamps ---------------------------------------------------------------------------

_TS = re.compile(
    r"^(?P<y>\d{4})(?P<mo>\d{2})?(?P<d>\d{2})?(?P<h>\d{2})?(?P<mi>\d{2})?(?P<s>\d{2})?"
    r"(?:\.(?P<f>\d{1,4}))?(?P<tz>[+-]\d{4})?$"
)


@dataclass(frozen=True)
class Hl7Time:
    """A parsed HL7 TS/DTM with its precision ('year'..'second')."""

    fhir: str  # FHIR date or dateTime
    precision: str
    moment: datetime | None  # aware datetime when a time was given


def parse_ts(value: str, default_tz: str = "UTC") -> Hl7Time:
    """HL7 YYYY[MM[DD[HH[MM[SS[.S+]]]]]][+/-ZZZZ] -> FHIR date/dateTime.

    A date alone keeps its precision (YYYY, YYYY-MM, YYYY-MM-DD). With a time FHIR needs
    seconds and an offset: missing minutes/seconds become 00, and a time without offset is
    read in `default_tz` (IANA name, e.g. "Europe/London"; DST resolved by zoneinfo).
    Raises ValueError on anything else.
    """
    value = value.strip()
    m = _TS.match(value)
    if not m:
        raise ValueError(f"not an HL7 timestamp: {value!r}")
    g = m.groupdict()
    if g["tz"] and not g["h"]:
        # e.g. "19850101+0700": a zone on a date means nothing in FHIR; keep the date.
        g["tz"] = None
    if g["f"] and not g["s"]:
        raise ValueError(f"fraction without seconds: {value!r}")
    y, mo, d = int(g["y"]), int(g["mo"] or 1), int(g["d"] or 1)
    h, mi, s = int(g["h"] or 0), int(g["mi"] or 0), int(g["s"] or 0)
    try:
        naive = datetime(y, mo, d, h, mi, s)
    except ValueError as exc:
        raise ValueError(f"impossible date/time {value!r}: {exc}") from exc
    if not g["h"]:
        precision = "day" if g["d"] else "month" if g["mo"] else "year"
        fhir = g["y"] + (f"-{g['mo']}" if g["mo"] else "") + (f"-{g['d']}" if g["d"] else "")
        return Hl7Time(fhir=fhir, precision=precision, moment=None)
    if g["tz"]:
        sign = 1 if g["tz"][0] == "+" else -1
        oh, om = int(g["tz"][1:3]), int(g["tz"][3:5])
        if om > 59 or oh > 14 or (oh == 14 and om):
            raise ValueError(f"bad UTC offset in {value!r}")
        tzinfo: Any = timezone(sign * timedelta(hours=oh, minutes=om))
    else:
        try:
            tzinfo = ZoneInfo(default_tz)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown default timezone {default_tz!r}") from exc
    moment = naive.replace(tzinfo=tzinfo)
    offset = moment.utcoffset() or timedelta(0)
    total = int(offset.total_seconds() // 60)
    sign_s = "-" if total < 0 else "+"
    off = f"{sign_s}{abs(total) // 60:02d}:{abs(total) % 60:02d}"
    frac = f".{g['f']}" if g["f"] else ""
    fhir = naive.strftime("%Y-%m-%dT%H:%M:%S") + frac + off
    precision = "second" if g["s"] else "minute" if g["mi"] else "hour"
    return Hl7Time(fhir=fhir, precision=precision, moment=moment)
