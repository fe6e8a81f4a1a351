"""A Bulk Data `$export` kick-off request (FHIR Bulk Data Access IG v2), validated.

Parameters are read from the query string and from a POSTed Parameters resource alike.
`patient` (Patient and Group level: references to the patients whose compartments the
export holds) narrows the export. Anything the server does not implement (`_typeFilter`,
`_elements`, `includeAssociatedData`, ...) is refused with a 400 unless the request says
`Prefer: handling=lenient`, in which case it is ignored (and named in the manifest's
`extension`), as the IG asks.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from fhircare.fhir import registry
from fhircare.fhir.errors import BadRequest
from fhircare.security.compartment import PATIENT_COMPARTMENT, patient_id_of

Level = Literal["system", "patient", "group"]

NDJSON = "application/fhir+ndjson"
OUTPUT_FORMATS = frozenset({NDJSON, "application/ndjson", "ndjson"})
SUPPORTED = ("_outputFormat", "_type", "_since", "patient")
IGNORED = ("_format", "_pretty")  # response negotiation, handled before routing

# http://hl7.org/fhir/datatypes.html#instant
_INSTANT = re.compile(
    r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:"
    r"([0-5][0-9]|60)(\.[0-9]+)?(Z|[+-]((0[0-9]|1[0-3]):[0-5][0-9]|14:00))$"
)


@dataclass(frozen=True)
class ExportRequest:
    """What one kick-off asks for; `types` None means every type the level allows."""

    level: Level
    request_url: str
    group_id: str | None = None
    types: tuple[str, ...] | None = None
    since: datetime | None = None
    output_format: str = NDJSON
    ignored: tuple[str, ...] = field(default=())
    patients: tuple[str, ...] | None = None  # ids given by `patient` (Patient/Group level)


def parse_instant(text: str) -> datetime:
    """A FHIR instant (`2026-01-01T00:00:00Z`) as an aware datetime; BadRequest otherwise."""
    value = text.strip()
    if not _INSTANT.match(value):
        hint = " (encode '+' in a time zone offset as %2B)" if " " in value else ""
        raise BadRequest(
            f"_since must be a FHIR instant such as 2026-01-01T00:00:00Z, not {value[:60]!r}"
            + hint,
            code="value",
        )
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def prefer_tokens(prefer: str | None) -> set[str]:
    """The tokens of a Prefer header (`respond-async`, `handling=lenient`), lower case."""
    return {t.strip().lower().replace(" ", "") for t in (prefer or "").split(",") if t.strip()}


def parse_request(
    level: Level,
    values: Iterable[tuple[str, Any]],
    *,
    request_url: str,
    lenient: bool,
    group_id: str | None = None,
    bases: Iterable[str] = (),
) -> ExportRequest:
    """Validate the kick-off parameters (name, value pairs from query and body); `bases`
    are this server's base URLs (an absolute `patient` reference must be to one)."""
    formats: list[str] = []
    type_values: list[str] = []
    since: datetime | None = None
    unsupported: list[str] = []
    patient_values: list[Any] = []
    for name, value in values:
        if name == "_outputFormat":
            formats.append(str(value))
        elif name == "_type":
            type_values.append(str(value))
        elif name == "_since":
            since = parse_instant(str(value))
        elif name == "patient" and level != "system":
            patient_values.append(value)
        elif name not in IGNORED:
            unsupported.append(name)
    if unsupported and not lenient:
        if "patient" in unsupported:
            raise BadRequest(
                "patient applies to a Patient or Group $export, not to a system-level one "
                "(send Prefer: handling=lenient to have it ignored)",
                code="not-supported",
            )
        raise BadRequest(
            f"$export does not support {', '.join(sorted(set(unsupported)))} (it takes "
            "_outputFormat, _type, _since and, at Patient and Group level, patient; send "
            "Prefer: handling=lenient to have unsupported parameters ignored)",
            code="not-supported",
        )
    output_format = NDJSON
    for fmt in formats:
        # an unencoded '+' in a query string arrives as a space
        normal = fmt.strip().replace(" ", "+").lower()
        if normal not in OUTPUT_FORMATS:
            raise BadRequest(
                f"_outputFormat {fmt[:60]!r} is not supported: use application/fhir+ndjson "
                "(or application/ndjson, ndjson)",
                code="not-supported",
            )
    types = _types(level, type_values, lenient) if type_values else None
    return ExportRequest(
        level=level,
        request_url=request_url,
        group_id=group_id,
        types=types,
        since=since,
        output_format=output_format,
        ignored=tuple(sorted(set(unsupported))),
        patients=_patients(patient_values, bases) if patient_values else None,
    )


def _patients(values: list[Any], bases: Iterable[str]) -> tuple[str, ...]:
    """The patient ids of `patient` values: Reference objects (a POSTed Parameters'
    valueReference) or reference strings (comma-separated in a query string)."""
    refs: list[str] = []
    for value in values:
        if isinstance(value, dict):
            refs.append(str(value.get("reference") or ""))
        else:
            refs += [r.strip() for r in str(value).split(",")]
    ids: list[str] = []
    for ref in refs:
        pid = patient_id_of(ref, bases)
        if pid is None:
            raise BadRequest(
                f"patient takes references to this server's Patients (Patient/123), "
                f"not {ref[:80]!r}",
                code="value",
            )
        ids.append(pid)
    return tuple(dict.fromkeys(ids))


def _types(level: Level, values: list[str], lenient: bool) -> tuple[str, ...]:
    names = [t.strip() for v in values for t in v.split(",") if t.strip()]
    if not names:
        raise BadRequest("_type names no resource type", code="value")
    unknown = [t for t in names if not registry.is_resource_type(t)]
    if unknown:
        raise BadRequest(
            f"_type names unknown resource types: {', '.join(unknown[:10])}", code="value"
        )
    if level != "system":
        outside = [t for t in names if t != "Patient" and t not in PATIENT_COMPARTMENT]
        if outside and not lenient:
            raise BadRequest(
                f"{', '.join(outside)} is not in the Patient compartment, so a Patient or "
                "Group $export never holds it (send Prefer: handling=lenient to ignore it)",
                code="not-supported",
            )
        names = [t for t in names if t not in outside]
        if not names:
            raise BadRequest("_type names no Patient compartment type", code="value")
    return tuple(dict.fromkeys(names))
