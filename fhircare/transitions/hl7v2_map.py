"""HL7 v2 ADT segments -> FHIR R4 dicts (Patient, Encounter, Condition).

Field-level choices follow the HL7 v2-to-FHIR IG where it speaks; the code tables live in
mappings/hl7v2.yaml. Functions here raise Hl7Error (AE) on content they cannot map and
append human-readable notes (no patient data) to `warnings` for what they skip.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from fhircare.transitions.hl7v2_er7 import Hl7Error, Rep, Segment, component, parse_ts

V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
NPI = "http://hl7.org/fhir/sid/us-npi"
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
DIAGNOSIS_ROLE = "http://terminology.hl7.org/CodeSystem/diagnosis-role"
CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
ADMIT_SOURCE = "http://terminology.hl7.org/CodeSystem/admit-source"
BIRTH_TIME = "http://hl7.org/fhir/StructureDefinition/patient-birthTime"

_OID = re.compile(r"^[0-2](\.(0|[1-9][0-9]*))+$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_FHIR_CODE = re.compile(r"^[^\s]+( [^\s]+)*$")


@dataclass
class MapContext:
    """What every mapper needs: tables, defaults, and a place for warnings."""

    tables: dict[str, Any]
    default_tz: str
    sending_facility: str
    warnings: list[str] = field(default_factory=list)

    @property
    def local(self) -> dict[str, str]:
        return self.tables["local_systems"]

    def ts(self, seg: Segment, n: int, raw: str | None = None) -> str | None:
        """FHIR dateTime of seg-n (first component), or None; AE on a bad value."""
        value = raw if raw is not None else seg.get(n)
        if not value:
            return None
        try:
            return parse_ts(value, self.default_tz).fhir
        except ValueError as exc:
            raise Hl7Error(
                f"{seg.name}-{n} is not a valid HL7 timestamp ({exc})".replace(value, "<value>"),
                "AE",
                segment=seg.name,
                field=n,
                error_code="102",
            ) from exc


# --- datatypes ----------------------------------------------------------------------------


def authority_system(namespace: str, universal_id: str, id_type: str, ctx: MapContext) -> str:
    """Identifier.system for an HD assigning authority ('' when there is none)."""
    kind = id_type.upper()
    if universal_id:
        if _OID.match(universal_id) and kind in ("ISO", ""):
            return f"urn:oid:{universal_id}"
        if _UUID.match(universal_id) and kind in ("UUID", "GUID", ""):
            return f"urn:uuid:{universal_id.lower()}"
        if kind in ("URI", "URL") and re.match(r"^https?://\S+$", universal_id):
            return universal_id
    if namespace:
        if _OID.match(namespace):
            return f"urn:oid:{namespace}"
        return ctx.local["identifier_system_prefix"] + quote(namespace, safe="")
    if universal_id:
        return ctx.local["identifier_system_prefix"] + quote(universal_id, safe="")
    return ""


def cx_identifier(rep: Rep, ctx: MapContext, default_type: str | None = None) -> dict | None:
    """CX -> Identifier; system from CX-4 (else CX-6, else the sending facility)."""
    value = component(rep, 1)
    if not value:
        return None
    type_code = component(rep, 5) or default_type or ""
    system = authority_system(component(rep, 4, 1), component(rep, 4, 2), component(rep, 4, 3), ctx)
    if not system:
        system = authority_system(
            component(rep, 6, 1), component(rep, 6, 2), component(rep, 6, 3), ctx
        )
    if not system:
        base = ctx.local["identifier_system_prefix"] + quote(ctx.sending_facility or "unknown")
        system = base + (f"/{quote(type_code, safe='')}" if type_code else "")
    ident: dict[str, Any] = {"system": system, "value": value}
    types = ctx.tables["identifier_types"]
    if type_code in types:
        coding = {"system": V2_0203, "code": type_code, "display": types[type_code]}
        ident["type"] = {"coding": [coding]}
    elif type_code:
        ident["type"] = {"text": type_code}
    return ident


def coded(system: str, code: str, display: str = "") -> dict[str, Any]:
    """CodeableConcept for a code in `system`; text only when the code is not a valid code."""
    concept: dict[str, Any] = {}
    if code and _FHIR_CODE.match(code):
        coding = {"system": system, "code": code}
        if display:
            coding["display"] = display
        concept["coding"] = [coding]
    if display or code:
        concept["text"] = display or code
    return concept


def xcn_reference(rep: Rep, ctx: MapContext) -> dict | None:
    """XCN -> Reference(Practitioner) with display and identifier only."""
    ident_value = component(rep, 1)
    family, given = component(rep, 2), component(rep, 3)
    prefix = component(rep, 6)
    display = " ".join(p for p in (prefix, given, component(rep, 4), family) if p)
    if not (display or ident_value):
        return None
    ref: dict[str, Any] = {"type": "Practitioner", "display": display or ident_value}
    if ident_value:
        ident: dict[str, Any] = {"value": ident_value}
        if component(rep, 13).upper() == "NPI":
            ident["system"] = NPI
        else:
            sys_ = authority_system(
                component(rep, 9, 1), component(rep, 9, 2), component(rep, 9, 3), ctx
            )
            if sys_:
                ident["system"] = sys_
        ref["identifier"] = ident
    return ref


def xpn_name(rep: Rep, ctx: MapContext) -> dict | None:
    """XPN -> HumanName (family, given + middle, prefix, suffix + degree, use)."""
    name: dict[str, Any] = {}
    family = component(rep, 1)
    given = [g for g in (component(rep, 2), component(rep, 3)) if g]
    suffix = [s for s in (component(rep, 4), component(rep, 6)) if s]
    prefix = component(rep, 5)
    if not (family or given):
        return None
    use = ctx.tables["name_use"].get(component(rep, 7).upper())
    if use:
        name["use"] = use
    if family:
        name["family"] = family
    if given:
        name["given"] = given
    if prefix:
        name["prefix"] = [prefix]
    if suffix:
        name["suffix"] = suffix
    return name


def xad_address(rep: Rep, ctx: MapContext) -> dict | None:
    """XAD -> Address."""
    addr: dict[str, Any] = {}
    lines = [line for line in (component(rep, 1), component(rep, 2)) if line]
    if lines:
        addr["line"] = lines
    for key, idx in (("city", 3), ("state", 4), ("postalCode", 5), ("country", 6)):
        if component(rep, idx):
            addr[key] = component(rep, idx)
    if component(rep, 9):
        addr["district"] = component(rep, 9)
    if not addr:
        return None
    addr.update(ctx.tables["address_type"].get(component(rep, 7).upper(), {}))
    return addr


def xtn_contact(rep: Rep, ctx: MapContext, default_use: str) -> dict | None:
    """XTN -> ContactPoint (phone, fax, pager, email)."""
    use_code, equipment, email = component(rep, 2), component(rep, 3), component(rep, 4)
    system = ctx.tables["telecom_equipment"].get(equipment, "phone")
    if use_code.upper() == "NET" or system == "email":
        system, value = "email", email or component(rep, 1)
    else:
        value = component(rep, 1)
        if not value:
            country, area, local, ext = (component(rep, i) for i in (5, 6, 7, 8))
            value = "".join(
                (
                    f"+{country} " if country else "",
                    f"({area}) " if area else "",
                    local,
                    f" x{ext}" if ext and local else "",
                )
            ).strip()
    if not value:
        return None
    point: dict[str, Any] = {"system": system, "value": value}
    use = ctx.tables["telecom_use"].get(use_code.upper(), default_use if not use_code else None)
    if use:
        point["use"] = use
    return point


def location_display(rep: Rep) -> str:
    """PL -> one display string (description, else facility/building/floor/unit/room/bed)."""
    if component(rep, 9):
        return component(rep, 9)
    parts = [component(rep, i) for i in (4, 7, 8, 1, 2, 3)]
    return " / ".join(p for p in parts if p)


# --- resources ----------------------------------------------------------------------------


def map_patient(pid: Segment, pd1: Segment | None, ctx: MapContext) -> dict[str, Any]:
    """PID (+ PD1-4) -> Patient."""
    identifiers = [i for i in (cx_identifier(r, ctx) for r in pid.reps(3)) if i]
    if not identifiers:  # PID-2 (external id) was the main id before v2.3.1
        identifiers = [i for i in (cx_identifier(r, ctx) for r in pid.reps(2)) if i]
    if not identifiers:
        raise Hl7Error(
            "PID-3 carries no patient identifier",
            "AE",
            segment="PID",
            field=3,
            error_code="101",
        )
    patient: dict[str, Any] = {"resourceType": "Patient", "identifier": identifiers}
    names = [n for n in (xpn_name(r, ctx) for r in pid.reps(5)) if n]
    if names:
        patient["name"] = names
    telecom = [t for t in (xtn_contact(r, ctx, "home") for r in pid.reps(13)) if t]
    telecom += [t for t in (xtn_contact(r, ctx, "work") for r in pid.reps(14)) if t]
    if telecom:
        patient["telecom"] = telecom
    sex = pid.get(8).upper()
    if sex:
        gender = ctx.tables["administrative_sex"].get(sex)
        if gender:
            patient["gender"] = gender
        else:
            ctx.warnings.append("PID-8 administrative sex not in table 0001; gender left out")
    raw_birth = pid.get(7)
    if raw_birth:
        birth = ctx.ts(pid, 7, raw_birth)
        assert birth is not None
        patient["birthDate"] = birth[:10]
        if "T" in birth:
            patient["_birthDate"] = {"extension": [{"url": BIRTH_TIME, "valueDateTime": birth}]}
    addresses = [a for a in (xad_address(r, ctx) for r in pid.reps(11)) if a]
    if addresses:
        patient["address"] = addresses
    death = pid.get(29)
    if death:
        patient["deceasedDateTime"] = ctx.ts(pid, 29, death)
    elif pid.get(30).upper() == "Y":
        patient["deceasedBoolean"] = True
    if pd1 is not None:
        gps = [g for g in (xcn_reference(r, ctx) for r in pd1.reps(4)) if g]
        if gps:
            patient["generalPractitioner"] = gps
    return patient


def encounter_identifier(
    pv1: Segment, pid: Segment, patient: dict[str, Any], ctx: MapContext
) -> dict[str, Any]:
    """PV1-19 visit number, else PID-18 account number, else one derived from PV1-44."""
    for seg, n, kind in ((pv1, 19, "VN"), (pid, 18, "AN")):
        reps = seg.reps(n)
        ident = cx_identifier(reps[0], ctx, kind) if reps else None
        if ident:
            return ident
    admit = pv1.get(44)
    if not admit:
        raise Hl7Error(
            "no visit number (PV1-19), account number (PID-18) or admit time (PV1-44) "
            "to identify the encounter",
            "AE",
            segment="PV1",
            field=19,
            error_code="101",
        )
    first = patient["identifier"][0]
    digest = hashlib.sha256(f"{first['system']}|{first['value']}|{admit}".encode()).hexdigest()
    ctx.warnings.append("no PV1-19/PID-18: encounter identifier derived from patient + PV1-44")
    return {"system": ctx.local["derived_encounter_identifier"], "value": digest[:32]}


def patient_class(pv1: Segment, ctx: MapContext) -> dict[str, str]:
    """PV1-2 -> Encounter.class Coding (1..1 in R4)."""
    code = pv1.get(2).upper()
    table = ctx.tables["patient_class"]
    if not code:
        ctx.warnings.append("PV1-2 patient class is empty")
        return dict(ctx.tables["patient_class_missing"])
    if code in table:
        return dict(table[code])
    ctx.warnings.append("PV1-2 patient class not in table 0004; kept as a local code")
    if not _FHIR_CODE.match(code):
        return dict(ctx.tables["patient_class_missing"])
    return {"system": ctx.local["patient_class"], "code": code}


def discharge_disposition(pv1: Segment, ctx: MapContext) -> dict[str, Any] | None:
    """PV1-36 -> CodeableConcept: v2-0112 coding + discharge-disposition coding."""
    code, text = pv1.get(36, 1), pv1.get(36, 2)
    if not code:
        return None
    table = ctx.tables["discharge_disposition"]
    entry = table["codes"].get(code)
    if entry is None and code.lower() in table["fhir_display"]:
        fhir = code.lower()
        coding = {
            "system": table["fhir_system"],
            "code": fhir,
            "display": table["fhir_display"][fhir],
        }
        return {"coding": [coding], "text": text or coding["display"]}
    if entry is None:
        local = coded(ctx.local["discharge_disposition"], code, text)
        fhir = (table.get("local_codes") or {}).get(code.upper())
        if fhir is None:
            ctx.warnings.append("PV1-36 discharge disposition not in table 0112; kept as text")
            return local
        # a site's own value, mapped in mappings/hl7v2.yaml: keep it and add the FHIR code
        local.setdefault("coding", []).append(
            {"system": table["fhir_system"], "code": fhir, "display": table["fhir_display"][fhir]}
        )
        return local
    codings = [{"system": table["system"], "code": code, "display": entry["display"]}]
    if entry.get("fhir"):
        fhir = entry["fhir"]
        codings.append(
            {"system": table["fhir_system"], "code": fhir, "display": table["fhir_display"][fhir]}
        )
    return {"coding": codings, "text": text or entry["display"]}


def admit_source(pv1: Segment, ctx: MapContext) -> dict[str, Any] | None:
    """PV1-14 (user-defined table 0023) -> local coding (+ admit-source if the site maps it)."""
    code, text = pv1.get(14, 1), pv1.get(14, 2)
    if not code:
        return None
    concept = coded(ctx.local["admit_source"], code, text)
    mapped = (ctx.tables.get("admit_source_fhir") or {}).get(code)
    if mapped:
        concept.setdefault("coding", []).append({"system": ADMIT_SOURCE, "code": mapped})
    return concept


def participants(pv1: Segment, ctx: MapContext) -> list[dict[str, Any]]:
    """PV1-7 attending, PV1-8 referring, PV1-17 admitting -> Encounter.participant."""
    out = []
    for n, code, display in (
        (7, "ATND", "attender"),
        (8, "REF", "referrer"),
        (17, "ADM", "admitter"),
    ):
        for rep in pv1.reps(n):
            ref = xcn_reference(rep, ctx)
            if ref:
                role = {"coding": [{"system": PARTICIPATION, "code": code, "display": display}]}
                out.append({"type": [role], "individual": ref})
    return out


def condition_code(dg1: Segment, ctx: MapContext) -> dict[str, Any]:
    """DG1-3 (CE/CWE, primary and alternate triplets) -> Condition.code."""
    codings: list[dict[str, str]] = []
    texts: list[str] = []
    for base in (1, 4):
        code, text = dg1.get(3, base), dg1.get(3, base + 1)
        cs = dg1.get(3, base + 2)
        if text:
            texts.append(text)
        if not code:
            continue
        system = ctx.tables["coding_systems"].get(cs.upper().replace(" ", ""))
        if system is None:
            ctx.warnings.append("DG1-3 coding system not in table 0396 map; kept as a local code")
            system = ctx.local["coding_system_prefix"] + quote(cs or "unknown", safe="")
        if system in ctx.tables["dotted_icd_systems"] and "." not in code and len(code) > 3:
            code = f"{code[:3]}.{code[3:]}"
        if system == "http://snomed.info/sct" and not code.isdigit():
            ctx.warnings.append("DG1-3 SNOMED CT code is not numeric; kept as a local code")
            system = ctx.local["coding_system_prefix"] + "SCT"
        if not _FHIR_CODE.match(code):
            continue
        coding = {"system": system, "code": code}
        if text:
            coding["display"] = text
        codings.append(coding)
    concept: dict[str, Any] = {}
    if codings:
        concept["coding"] = codings
    text = texts[0] if texts else dg1.get(4)
    if text:
        concept["text"] = text
    return concept
