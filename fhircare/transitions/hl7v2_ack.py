"""HL7 v2 original-mode acknowledgements (ACK) with MSA and ERR segments.

Built from the raw message text, best effort, so a message the parser refused still gets
an ACK that echoes whatever control id, version and processing id can be read.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

from fhircare.transitions.hl7v2_er7 import (
    Hl7Error,
    codec_for,
    decode_er7,
    escape,
    load_tables,
    normalize,
    sniff_charset,
)

if TYPE_CHECKING:
    from fhircare.transitions.hl7v2 import AdtMessage

STANDARD_ENC = "^~\\&"
DEFAULT_VERSION = "2.5.1"
_SAFE = re.compile(r"^[^|^~\\&\r\n]*$")


@dataclass(frozen=True)
class _Header:
    """The MSH facts an ACK echoes (raw, single-field ER7 text)."""

    sending_app: str = ""
    sending_facility: str = ""
    receiving_app: str = ""
    receiving_facility: str = ""
    event: str = ""
    control_id: str = ""
    processing_id: str = "P"
    version: str = DEFAULT_VERSION
    charset: str = ""


def read_header(message_or_raw: AdtMessage | str | bytes) -> _Header:
    """Best-effort MSH facts from anything: an AdtMessage, ER7 text or bytes (even garbage)."""
    raw = getattr(message_or_raw, "raw", message_or_raw)
    text = decode_er7(raw)[0] if isinstance(raw, bytes) else str(raw)
    text = normalize(text)
    start = text.find("MSH")
    if start < 0 or len(text) < start + 4:
        return _Header()
    line = text[start:].split("\r", 1)[0]
    sep = line[3]
    fields = line.split(sep)  # fields[n - 1] is MSH-n for n >= 3
    enc = fields[1] if len(fields) > 1 else ""
    valid_enc = (
        len(enc) in (4, 5) and len(set(enc)) == len(enc) and not any(c.isalnum() for c in enc)
    )
    comp = enc[0] if valid_enc else "^"

    def msh(n: int, first_component: bool = False) -> str:
        value = fields[n - 1].strip() if len(fields) >= n else ""
        if first_component:
            value = value.split(comp)[0]
        if valid_enc and enc == STANDARD_ENC and sep == "|":
            return value
        # Foreign delimiters: copy plain text only, re-escaped for our standard delimiters.
        return escape(value.replace(comp, " ").strip())

    type_parts = (fields[8] if len(fields) >= 9 else "").split(comp)
    event = type_parts[1].strip() if len(type_parts) > 1 else ""
    return _Header(
        sending_app=msh(3),
        sending_facility=msh(4),
        receiving_app=msh(5),
        receiving_facility=msh(6),
        event=event if _SAFE.match(event) and len(event) <= 3 else "",
        control_id=msh(10, True)[:199],
        processing_id=msh(11, True) or "P",
        version=msh(12, True) or DEFAULT_VERSION,
        charset=msh(18, True),
    )


def build_ack(
    message_or_raw: AdtMessage | str | bytes,
    code: Literal["AA", "AE", "AR"],
    text: str | None = None,
    *,
    error_location: str | tuple[str, int] | None = None,
    error_code: str | None = None,
) -> str:
    """An ACK (CR-separated ER7): MSH (sender/receiver swapped), MSA, and ERR unless AA.

    `error_location` is an ERR-2 value ("PID^1^7") or (segment, field); `error_code` is an
    HL7 table 0357 code (default 207, application internal error).
    """
    h = read_header(message_or_raw)
    now = datetime.now(UTC).strftime("%Y%m%d%H%M%S+0000")
    event_part = f"^{h.event}^ACK" if h.event else ""
    msh = [
        "MSH",
        STANDARD_ENC,
        h.receiving_app,
        h.receiving_facility,
        h.sending_app,
        h.sending_facility,
        now,
        "",
        f"ACK{event_part}",
        uuid.uuid4().hex[:20],
        h.processing_id,
        h.version,
    ]
    if h.charset:
        msh += ["", "", "", "", "", h.charset]
    segments = ["|".join(msh)]
    segments.append("|".join(["MSA", code, h.control_id, escape((text or "")[:80])]).rstrip("|"))
    if code != "AA":
        message = escape((text or "")[:250])
        segments.append(_err(h.version, code, message, error_location, error_code))
    return "\r".join(segments) + "\r"


def _err(
    version: str,
    code: str,
    message: str,
    location: str | tuple[str, int] | None,
    error_code: str | None,
) -> str:
    err_code = error_code or "207"
    label = load_tables()["error_codes"].get(err_code, "")
    if isinstance(location, tuple):
        seg, fld = location
        location = f"{seg}^1^{fld}" if fld else f"{seg}^1"
    location = location or ""
    fields = ["ERR", "", location, f"{err_code}^{label}^HL70357", "E", "", "", "", message]
    if _legacy(version):
        # Before v2.5 ERR-1 (ELD: segment^sequence^field^code) was the only field.
        eld = (location.split("^") + ["", "", ""])[:3]
        fields[1] = "^".join([*eld, f"{err_code}&{label}&HL70357"])
    return "|".join(fields).rstrip("|")


def _legacy(version: str) -> bool:
    try:
        major, minor = (int(p) for p in version.split(".")[:2])
    except ValueError:
        return False
    return (major, minor) < (2, 5)


def ack_for_error(message_or_raw: AdtMessage | str | bytes, error: Hl7Error) -> str:
    """The AE/AR ACK describing an Hl7Error (ERR-2 location, ERR-3 code, ERR-8 reason)."""
    location: str | None = None
    if error.segment:
        parts = [error.segment, str(error.sequence)]
        if error.field:
            parts.append(str(error.field))
            if error.component:
                parts += ["1", str(error.component)]
        location = "^".join(parts)
    return build_ack(
        message_or_raw,
        error.code,
        error.reason,
        error_location=location,
        error_code=error.error_code,
    )


def encode_ack(ack: str, original: bytes | str | None = None) -> bytes:
    """ACK bytes in the original message's MSH-18 charset (UTF-8 by default)."""
    charset = sniff_charset(original) if isinstance(original, bytes) else None
    codec = codec_for(charset)
    return ack.encode(codec, errors="replace")
