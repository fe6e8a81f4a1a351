"""HL7 v2 ADT intake: parsing, FHIR mapping, ACKs and the transaction Bundle.

Every message here is written for these tests (fictional people and places).
"""

from __future__ import annotations

import pytest
from fhir.resources.R4B import get_fhir_model_class

from fhircare.transitions.hl7v2 import (
    AdtMessage,
    Hl7Error,
    ack_for_error,
    adt_to_transaction,
    build_ack,
    encode_ack,
    parse_adt,
)
from fhircare.transitions.hl7v2_er7 import load_tables, parse_ts

ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
SNOMED = "http://snomed.info/sct"
ACTCODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
DISPOSITION = "http://terminology.hl7.org/CodeSystem/discharge-disposition"


def er7(*segments: str, sep: str = "\r") -> str:
    return sep.join(segments) + sep


A01_251 = er7(
    "MSH|^~\\&|ADTSYS|NORTHWARD^1.2.840.999.1^ISO|FHIRCARE|CAREHUB|20240301083000-0500||"
    "ADT^A01^ADT_A01|CTRL0001|P|2.5.1|||AL|NE||UNICODE UTF-8",
    "EVN|A01|20240301083000-0500",
    "PID|1||MRN1001^^^NWH&2.16.840.1.113883.3.9999&ISO^MR~555443333^^^SSA^SS~^^^EMPTY^PI||"
    "Dupont^Zoé^Marie^^Mme^^L~Dupont^Zoe^^^^^D||19500214|F|||"
    "12 Rue Haute^Apt 3^Springfield^IL^62701^USA^H||"
    "^PRN^PH^^1^217^5550101~^NET^Internet^zoe@example.org|(217)555-0199^WPN^PH||||ACC778",
    "PD1||||1234567890^Welby^Marcus^^^Dr^^^^^^^NPI",
    "PV1|1|I|4W^401^B^NWH||||1111^Attend^Alice^^^Dr|||MED||||7|||||V5001^^^NWH^VN"
    + "|" * 25
    + "20240301081500-0500",
    "DG1|1|I10|I509^Heart failure, unspecified^I10|||A|||||||||1",
    "ZPI|site specific|ignored^completely",
)


def a03(version: str, *, pv1_45: str = "202403050900", disposition: str = "03") -> str:
    return er7(
        f"MSH|^~\\&|ADTSYS|NORTHWARD|FHIRCARE|CAREHUB|202403050930||ADT^A03|CTRL0002|P|{version}",
        "EVN|A03|202403050930||||202403050915",
        "PID|1||MRN1001^^^NWH^MR||Dupont^Zoé||19500214|F",
        "PV1|1|I|4W^401^B||||||||||||||||V5001^^^NWH^VN"
        + "|" * 17
        + f"{disposition}"
        + "|" * 8
        + f"202403010815|{pv1_45}",
        "DG1|1|I10C|I10^Essential (primary) hypertension^I10C",
        "DG1|2|SCT|84114007^Heart failure^SNM||20240304120000+0000|F",
        "DG1|3|I10C|I10^Essential (primary) hypertension^I10C",
    )


def pv1(patient_class: str, visit: str) -> str:
    """A minimal PV1 with PV1-2 and PV1-19."""
    return f"PV1|1|{patient_class}" + "|" * 17 + visit


def validate(resource: dict) -> None:
    get_fhir_model_class(resource["resourceType"]).model_validate(resource)


def fields(segment: str) -> list[str]:
    """ER7 fields of one segment, numbered like HL7 (MSH-n is [n - 1] for MSH)."""
    return segment.split("|")


# --- parsing and mapping ------------------------------------------------------------------


def test_a01_251_maps_patient_encounter_and_condition() -> None:
    adt = parse_adt(A01_251)
    assert (adt.control_id, adt.trigger_event, adt.version, adt.action) == (
        "CTRL0001",
        "A01",
        "2.5.1",
        "admit",
    )
    assert (adt.sending_application, adt.sending_facility) == ("ADTSYS", "NORTHWARD")
    assert adt.message_time == "2024-03-01T08:30:00-05:00"

    p = adt.patient
    assert p["identifier"][0]["system"] == "urn:oid:2.16.840.1.113883.3.9999"
    assert p["identifier"][0]["value"] == "MRN1001"
    assert p["identifier"][0]["type"]["coding"][0]["code"] == "MR"
    assert p["identifier"][1]["system"] == "http://fhircare.org/fhir/sid/hl7v2/SSA"
    assert len(p["identifier"]) == 2  # the repetition without an id is dropped
    assert p["name"][0] == {
        "use": "official",
        "family": "Dupont",
        "given": ["Zoé", "Marie"],
        "prefix": ["Mme"],
    }
    assert p["name"][1]["use"] == "usual"
    assert p["birthDate"] == "1950-02-14"
    assert p["gender"] == "female"
    assert p["address"][0]["line"] == ["12 Rue Haute", "Apt 3"]
    assert p["address"][0]["use"] == "home"
    assert {"system": "phone", "value": "+1 (217) 5550101", "use": "home"} in p["telecom"]
    assert {"system": "email", "value": "zoe@example.org"} in p["telecom"]
    assert {"system": "phone", "value": "(217)555-0199", "use": "work"} in p["telecom"]
    gp = p["generalPractitioner"][0]
    assert gp["identifier"] == {"value": "1234567890", "system": "http://hl7.org/fhir/sid/us-npi"}
    assert gp["display"] == "Dr Marcus Welby"

    e = adt.encounter
    assert e["status"] == "in-progress"
    assert e["class"] == {"system": ACTCODE, "code": "IMP", "display": "inpatient encounter"}
    assert e["identifier"][0]["value"] == "V5001"
    assert e["period"] == {"start": "2024-03-01T08:15:00-05:00"}
    assert e["subject"] == {"reference": adt.patient_url}
    assert e["location"][0] == {"location": {"display": "NWH / 4W / 401 / B"}, "status": "active"}
    assert e["diagnosis"][0]["use"]["coding"][0]["code"] == "AD"
    assert e["diagnosis"][0]["rank"] == 1

    (cond,) = adt.conditions
    assert cond["code"]["coding"] == [
        {"system": ICD10CM, "code": "I50.9", "display": "Heart failure, unspecified"}
    ]
    assert cond["category"][0]["coding"][0]["code"] == "encounter-diagnosis"
    assert cond["encounter"] == {"reference": adt.encounter_url}
    assert e["diagnosis"][0]["condition"] == {"reference": adt.condition_urls[0]}
    for resource in (p, e, cond):
        validate(resource)


@pytest.mark.parametrize("version", ["2.3", "2.5.1", "2.8"])
@pytest.mark.parametrize("sep", ["\r", "\n", "\r\n"])
def test_a03_versions_and_separators(version: str, sep: str) -> None:
    adt = parse_adt(a03(version).replace("\r", sep))
    assert adt.action == "discharge" and adt.is_discharge
    e = adt.encounter
    assert e["status"] == "finished"
    assert e["period"] == {"start": "2024-03-01T08:15:00+00:00", "end": "2024-03-05T09:00:00+00:00"}
    codes = [c["code"] for c in e["hospitalization"]["dischargeDisposition"]["coding"]]
    assert codes == ["03", "snf"]
    assert e["location"][0]["status"] == "completed"
    # DG1-3 is repeated (I10 twice): one Condition per distinct code.
    assert [c["code"]["coding"][0]["code"] for c in adt.conditions] == ["I10", "84114007"]
    assert adt.conditions[1]["code"]["coding"][0]["system"] == SNOMED
    assert adt.conditions[1]["recordedDate"] == "2024-03-04T12:00:00+00:00"
    assert e["diagnosis"][1]["use"]["coding"][0]["code"] == "DD"
    for resource in (adt.patient, e, *adt.conditions):
        validate(resource)


def test_a03_without_discharge_time_falls_back_to_evn6() -> None:
    adt = parse_adt(a03("2.5.1", pv1_45=""))
    assert adt.encounter["period"]["end"] == "2024-03-05T09:15:00+00:00"
    assert any("EVN" in w for w in adt.warnings)


def test_a03_discharge_before_admit_is_refused() -> None:
    with pytest.raises(Hl7Error) as err:
        parse_adt(a03("2.5.1", pv1_45="202402010000"))
    assert (err.value.code, err.value.segment, err.value.field) == ("AE", "PV1", 45)


def test_unknown_discharge_disposition_is_kept_as_text_only_locally() -> None:
    adt = parse_adt(a03("2.5.1", disposition="Feeling great"))
    dd = adt.encounter["hospitalization"]["dischargeDisposition"]
    assert dd["text"] == "Feeling great"
    assert all(c["system"] != DISPOSITION for c in dd.get("coding", []))


def test_a13_cancel_discharge_reopens_encounter() -> None:
    msg = a03("2.5.1").replace("ADT^A03", "ADT^A13").replace("EVN|A03", "EVN|A13")
    adt = parse_adt(msg)
    assert adt.action == "cancel-discharge"
    assert adt.encounter["status"] == "in-progress"
    assert "end" not in adt.encounter["period"]
    assert "dischargeDisposition" not in adt.encounter.get("hospitalization", {})


def test_bom_bytes_and_msh18_latin1() -> None:
    msg = er7(
        "MSH|^~\\&|A|B|C|D|20240102||ADT^A04|C3|P|2.4||||||8859/1",
        "PID|1||X1^^^H^MR||Müller^Jürgen",
        pv1("O", "V1"),
    )
    adt = parse_adt(b"\xef\xbb\xbf" + msg.encode("latin-1"))
    assert adt.patient["name"][0] == {"family": "Müller", "given": ["Jürgen"]}
    assert adt.encounter["class"]["code"] == "AMB"
    # The ACK goes back in the sender's charset.
    ack = build_ack(adt, "AA", "Grüße")
    assert encode_ack(ack, msg.encode("latin-1")).decode("latin-1") == ack


def test_non_ascii_utf8_names() -> None:
    msg = er7(
        "MSH|^~\\&|A|B|C|D|20240102||ADT^A01|C4|P|2.8",
        "PID|1||X2^^^H^MR||Straße^Jörg~王^小明",
        pv1("I", "V2"),
    )
    adt = parse_adt(msg.encode("utf-8"))
    assert [n["family"] for n in adt.patient["name"]] == ["Straße", "王"]
    assert adt.patient["name"][1]["given"] == ["小明"]


def test_escape_sequences_are_decoded() -> None:
    msg = er7(
        "MSH|^~\\&|A|B|C|D|20240102||ADT^A01|C5|P|2.5",
        "PID|1||X3^^^H^MR||M\\XC3BC\\ller^Ann\\E\\e||||||1 Main St \\T\\ 2nd Ave\\F\\Unit 4",
        pv1("I", "V3"),
        "PV2|||^chest pain\\R\\dyspnoea \\S\\ cough",
    )
    adt = parse_adt(msg)
    assert adt.patient["name"][0] == {"family": "Müller", "given": ["Ann\\e"]}
    assert adt.patient["address"][0]["line"] == ["1 Main St & 2nd Ave|Unit 4"]
    assert adt.encounter["reasonCode"] == [{"text": "chest pain~dyspnoea ^ cough"}]


def test_empty_fields_and_explicit_nulls_are_left_out() -> None:
    msg = er7(
        "MSH|^~\\&|A|B|C|D|20240102||ADT^A08|C6|P|2.5",
        'PID|1||X4^^^H^MR||""||""|""',
        pv1("", "V4"),
    )
    adt = parse_adt(msg)
    assert set(adt.patient) == {"resourceType", "identifier"}
    # Encounter.class is 1..1: an empty PV1-2 becomes NullFlavor UNK, with a warning.
    assert adt.encounter["class"]["code"] == "UNK"
    assert any("PV1-2" in w for w in adt.warnings)
    validate(adt.encounter)


def test_account_number_is_the_encounter_identifier_without_visit_number() -> None:
    msg = er7(
        "MSH|^~\\&|A|FAC|C|D|20240102||ADT^A04|C7|P|2.3",
        "PID|1||X5^^^H^MR||Doe^Jan|||||||||||||ACCT55",
        "PV1|1|E",
    )
    adt = parse_adt(msg)
    ident = adt.encounter["identifier"][0]
    assert ident["value"] == "ACCT55"
    assert ident["type"]["coding"][0]["code"] == "AN"
    assert ident["system"] == "http://fhircare.org/fhir/sid/hl7v2/FAC/AN"
    assert adt.encounter["class"]["code"] == "EMER"


# --- timestamps ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "tz", "fhir", "precision"),
    [
        ("2024", "UTC", "2024", "year"),
        ("202403", "UTC", "2024-03", "month"),
        ("20240305", "UTC", "2024-03-05", "day"),
        ("2024030509", "UTC", "2024-03-05T09:00:00+00:00", "hour"),
        ("202403050915", "UTC", "2024-03-05T09:15:00+00:00", "minute"),
        ("20240305091530.1234", "UTC", "2024-03-05T09:15:30.1234+00:00", "second"),
        ("20240305091530+0215", "UTC", "2024-03-05T09:15:30+02:15", "second"),
        ("20240105091530", "America/New_York", "2024-01-05T09:15:30-05:00", "second"),
        ("20240705091530", "America/New_York", "2024-07-05T09:15:30-04:00", "second"),
        ("19850101+0700", "UTC", "1985-01-01", "day"),
    ],
)
def test_parse_ts(raw: str, tz: str, fhir: str, precision: str) -> None:
    ts = parse_ts(raw, tz)
    assert (ts.fhir, ts.precision) == (fhir, precision)


@pytest.mark.parametrize(
    "raw", ["2024-03-05", "20241305", "20240230", "202403051", "2024030509+1530", "x"]
)
def test_parse_ts_rejects_garbage(raw: str) -> None:
    with pytest.raises(ValueError):
        parse_ts(raw)


def test_default_tz_applies_to_message_times() -> None:
    adt = parse_adt(a03("2.5.1"), default_tz="Europe/Paris")
    assert adt.encounter["period"]["end"] == "2024-03-05T09:00:00+01:00"


# --- refusals -----------------------------------------------------------------------------


def _refusal(message: str | bytes) -> Hl7Error:
    with pytest.raises(Hl7Error) as err:
        parse_adt(message)
    return err.value


@pytest.mark.parametrize(
    ("message", "code", "error_code", "where"),
    [
        ("PID|1||X^^^H^MR", "AR", "100", ("MSH", None)),
        (b"\x00\xff garbage \x01", "AR", "100", ("MSH", None)),
        ("", "AR", "100", ("MSH", None)),
        (A01_251.replace("^~\\&", "^~\\\\&", 1), "AR", "102", ("MSH", 2)),
        (A01_251.replace("ADT^A01^ADT_A01", "ORU^R01^ORU_R01"), "AR", "200", ("MSH", 9)),
        (A01_251.replace("ADT^A01^ADT_A01", "ADT^A31^ADT_A05"), "AR", "201", ("MSH", 9)),
        (A01_251.replace("ADT^A01^ADT_A01", ""), "AR", "101", ("MSH", 9)),
        (A01_251.replace("|2.5.1|", "|3.0|"), "AR", "203", ("MSH", 12)),
        (A01_251.replace("|CTRL0001|", "||"), "AR", "101", ("MSH", 10)),
        (A01_251.replace("\rPID|", "\rXID|"), "AE", "100", ("PID", None)),
        (A01_251.replace("\rPV1|", "\rXV1|"), "AE", "100", ("PV1", None)),
        (A01_251.replace("|19500214|", "|19501399|"), "AE", "102", ("PID", 7)),
        (
            A01_251.replace("MRN1001^^^NWH&", "^^^NWH&").replace("555443333", ""),
            "AE",
            "101",
            ("PID", 3),
        ),
    ],
)
def test_malformed_messages_are_refused(
    message: str | bytes, code: str, error_code: str, where: tuple[str, int | None]
) -> None:
    err = _refusal(message)
    assert (err.code, err.error_code, err.segment, err.field) == (code, error_code, *where)
    assert err.reason
    ack = ack_for_error(message, err).split("\r")
    assert fields(ack[1])[1] == code
    assert fields(ack[2])[3] == f"{error_code}^{load_tables()['error_codes'][error_code]}^HL70357"


def test_error_reason_does_not_echo_patient_values() -> None:
    err = _refusal(A01_251.replace("|19500214|", "|19501399|"))
    assert "19501399" not in err.reason


# --- ACKs ---------------------------------------------------------------------------------


def test_aa_ack_structure() -> None:
    adt = parse_adt(A01_251)
    ack = build_ack(adt, "AA")
    assert ack.endswith("\r") and "\n" not in ack
    msh, msa = ack.rstrip("\r").split("\r")
    f = fields(msh)
    assert f[0] == "MSH" and f[1] == "^~\\&"
    # Sender and receiver swapped, whole fields kept.
    assert (f[2], f[3], f[4], f[5]) == (
        "FHIRCARE",
        "CAREHUB",
        "ADTSYS",
        "NORTHWARD^1.2.840.999.1^ISO",
    )
    assert f[8] == "ACK^A01^ACK"
    assert f[9] and f[9] != "CTRL0001"
    assert (f[10], f[11]) == ("P", "2.5.1")
    assert f[17] == "UNICODE UTF-8"
    assert fields(msa) == ["MSA", "AA", "CTRL0001"]


def test_ae_ack_has_err_with_location_severity_and_escaped_text() -> None:
    ack = build_ack(
        A01_251, "AE", "bad | value ^ here", error_location=("PID", 7), error_code="102"
    )
    msh, msa, err = ack.rstrip("\r").split("\r")
    assert fields(msa) == ["MSA", "AE", "CTRL0001", "bad \\F\\ value \\S\\ here"]
    e = fields(err)
    assert e[0] == "ERR"
    assert e[2] == "PID^1^7"
    assert e[3] == "102^Data type error^HL70357"
    assert e[4] == "E"
    assert e[8] == "bad \\F\\ value \\S\\ here"


def test_legacy_version_ack_also_fills_err1() -> None:
    err = _refusal(a03("2.3").replace("|19500214|", "|1950021|"))
    e = fields(ack_for_error(a03("2.3"), err).split("\r")[2])
    assert e[1] == "PID^1^7^102&Data type error&HL70357"


def test_ack_for_unparseable_input_is_best_effort() -> None:
    msg = "MSH|^~\\\\&|LEGACY|SITE|||20240101||ADT^A01|XYZ9|T|2.2\nPID|oops"
    err = _refusal(msg.encode())
    msh, msa, _ = ack_for_error(msg.encode(), err).rstrip("\r").split("\r")
    assert fields(msh)[4:6] == ["LEGACY", "SITE"]
    assert (fields(msh)[10], fields(msh)[11]) == ("T", "2.2")
    assert fields(msa)[:3] == ["MSA", "AR", "XYZ9"]
    garbage = build_ack(b"\x00\x01 not hl7", "AR", "not an HL7 message")
    assert fields(garbage.split("\r")[1])[:3] == ["MSA", "AR", ""]
    assert fields(garbage.split("\r")[0])[8] == "ACK"


# --- transaction Bundle -------------------------------------------------------------------


def test_transaction_bundle_upserts_conditionally_and_links_by_urn() -> None:
    adt = parse_adt(a03("2.5.1"))
    bundle = adt_to_transaction(adt)
    validate(bundle)
    assert bundle["type"] == "transaction"
    patient, encounter, *conditions = bundle["entry"]
    assert patient["request"] == {
        "method": "PUT",
        "url": "Patient?identifier=http://fhircare.org/fhir/sid/hl7v2/NWH|MRN1001",
    }
    assert encounter["request"]["url"] == (
        "Encounter?identifier=http://fhircare.org/fhir/sid/hl7v2/NWH|V5001"
    )
    assert [c["request"]["ifNoneExist"] for c in conditions] == [
        "identifier=http://fhircare.org/fhir/sid/hl7v2-dg1|V5001:I10",
        "identifier=http://fhircare.org/fhir/sid/hl7v2-dg1|V5001:84114007",
    ]
    assert all(c["request"]["method"] == "POST" for c in conditions)
    full_urls = {e["fullUrl"] for e in bundle["entry"]}
    assert all(u.startswith("urn:uuid:") for u in full_urls) and len(full_urls) == 4
    assert encounter["resource"]["subject"]["reference"] == patient["fullUrl"]
    for c in conditions:
        assert c["resource"]["encounter"]["reference"] == encounter["fullUrl"]
        assert c["resource"]["subject"]["reference"] == patient["fullUrl"]
    diag_refs = {d["condition"]["reference"] for d in encounter["resource"]["diagnosis"]}
    assert diag_refs == {c["fullUrl"] for c in conditions}


def test_transaction_prefers_mr_identifier_and_escapes_search_values() -> None:
    msg = er7(
        "MSH|^~\\&|A|B|C|D|20240102||ADT^A01|C8|P|2.5",
        "PID|1||SS1^^^SSA^SS~AB,C\\F\\D^^^H^MR||Doe^Jan",
        pv1("I", "V 9"),
    )
    bundle = adt_to_transaction(parse_adt(msg))
    assert bundle["entry"][0]["request"]["url"] == (
        "Patient?identifier=http://fhircare.org/fhir/sid/hl7v2/H|AB\\,C\\|D"
    )
    assert bundle["entry"][1]["request"]["url"].endswith("|V%209")


def test_adt_message_repr_carries_no_patient_data() -> None:
    adt = parse_adt(A01_251)
    assert isinstance(adt, AdtMessage)
    assert "Dupont" not in repr(adt) and "MRN1001" not in repr(adt)


def test_unknown_default_tz_is_a_configuration_error() -> None:
    with pytest.raises(ValueError):
        parse_adt(A01_251, default_tz="Mars/Olympus_Mons")
