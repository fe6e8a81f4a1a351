"""Conditional writes sent at the same instant to a real `fhircare serve` on loopback: an
integration engine that retries, or two interfaces that admit one new patient, must leave one
Patient, never two (which would split the record and make every later match a 412)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime

import httpx
import pytest

from tests.conftest import ServerProcess

SYSTEM = "urn:oid:2.16.840.1.113883.3.4245.1"  # an MRN system of the project's own tests
FHIR_JSON = {"Content-Type": "application/fhir+json"}
SENDERS = 12


def at_once(send: Callable[[httpx.Client, int], httpx.Response], base: str) -> list[httpx.Response]:
    """`send` from SENDERS threads, each on its own open connection, released together."""
    clients = [httpx.Client(base_url=base, timeout=60) for _ in range(SENDERS)]
    for c in clients:  # connect first, so the requests leave together
        assert c.get("/metadata", params={"_summary": "true"}).status_code == 200
    gate = threading.Barrier(SENDERS)
    out: list[httpx.Response | None] = [None] * SENDERS

    def run(i: int) -> None:
        gate.wait()
        out[i] = send(clients[i], i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(SENDERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for c in clients:
        c.close()
    assert all(r is not None for r in out)
    return [r for r in out if r is not None]


def stored(base: str, rtype: str, query: str) -> list[dict]:
    with httpx.Client(base_url=base, timeout=30) as c:
        bundle = c.get(f"/{rtype}?{query}", headers={"Cache-Control": "no-cache"}).json()
    return [e["resource"] for e in bundle.get("entry", [])]


def patient(mrn: str) -> dict:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": SYSTEM, "value": mrn}],
        "name": [{"family": "Concurrent", "given": ["Pat"]}],
    }


@pytest.mark.parametrize("round_", range(3))
def test_if_none_exist_creates_once(server: ServerProcess, round_: int) -> None:
    mrn = f"race-create-{round_}"

    def send(c: httpx.Client, i: int) -> httpx.Response:
        headers = {**FHIR_JSON, "If-None-Exist": f"identifier={SYSTEM}|{mrn}"}
        return c.post("/Patient", json=patient(mrn), headers=headers)

    answers = at_once(send, server.base)
    assert sorted(r.status_code for r in answers) == [200] * (SENDERS - 1) + [201]
    assert len({r.json()["id"] for r in answers}) == 1
    assert len(stored(server.base, "Patient", f"identifier={SYSTEM}|{mrn}")) == 1


def test_conditional_update_creates_once(server: ServerProcess) -> None:
    mrn = "race-put"

    def send(c: httpx.Client, i: int) -> httpx.Response:
        return c.put(f"/Patient?identifier={SYSTEM}|{mrn}", json=patient(mrn), headers=FHIR_JSON)

    answers = at_once(send, server.base)
    codes = [r.status_code for r in answers]
    assert codes.count(201) == 1 and codes.count(200) == SENDERS - 1, codes
    assert len(stored(server.base, "Patient", f"identifier={SYSTEM}|{mrn}")) == 1


def test_transactions_with_conditional_entries_create_once(server: ServerProcess) -> None:
    mrn = "race-bundle"

    def send(c: httpx.Client, i: int) -> httpx.Response:
        bundle = {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {
                    "fullUrl": "urn:uuid:0b6e7c52-5d0e-4d7e-9d5e-1f3f1c1a0001",
                    "resource": patient(mrn),
                    "request": {
                        "method": "POST",
                        "url": "Patient",
                        "ifNoneExist": f"identifier={SYSTEM}|{mrn}",
                    },
                },
                {
                    "resource": {
                        "resourceType": "Observation",
                        "status": "final",
                        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                        "subject": {"reference": "urn:uuid:0b6e7c52-5d0e-4d7e-9d5e-1f3f1c1a0001"},
                        "valueQuantity": {
                            "value": 60 + i,
                            "unit": "/min",
                            "system": "http://unitsofmeasure.org",
                            "code": "/min",
                        },
                    },
                    "request": {"method": "POST", "url": "Observation"},
                },
            ],
        }
        return c.post("", json=bundle, headers=FHIR_JSON)

    answers = at_once(send, server.base)
    assert [r.status_code for r in answers] == [200] * SENDERS
    found = stored(server.base, "Patient", f"identifier={SYSTEM}|{mrn}")
    assert len(found) == 1
    # every Observation points at the one Patient
    observations = stored(server.base, "Observation", f"subject=Patient/{found[0]['id']}")
    assert len(observations) == SENDERS


def admit(mrn: str, control: str) -> bytes:
    sent = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    return (
        f"MSH|^~\\&|ADT|GENHOSP|FHIRCARE|CM|{sent}||ADT^A01^ADT_A01|{control}|P|2.5.1\r"
        f"EVN|A01|{sent}\r"
        f"PID|1||{mrn}^^^GENHOSP^MR||Concurrent^Pat||19470312|F\r"
        f"PV1|1|I|W1^101^A||||||||||||||||V-{mrn}^^^GENHOSP^VN|||||||||||||||||||||||||"
        f"{sent}\r"
    ).encode()


def test_hl7_admissions_of_one_new_patient_create_it_once(server: ServerProcess) -> None:
    """The same A01 from two interfaces (own control ids) and its resends, all at once."""
    mrn = "RACE-HL7"

    def send(c: httpx.Client, i: int) -> httpx.Response:
        return c.post(
            f"http://127.0.0.1:{server.port}/hl7v2",
            content=admit(mrn, f"CTL-{i % 2}"),
            headers={"Content-Type": "x-application/hl7-v2+er7"},
        )

    answers = at_once(send, server.base)
    assert all("MSA|AA|" in r.text for r in answers), [r.text for r in answers]
    found = stored(server.base, "Patient", f"identifier={mrn}")
    assert len(found) == 1
    assert len(stored(server.base, "Encounter", f"subject=Patient/{found[0]['id']}")) == 1
