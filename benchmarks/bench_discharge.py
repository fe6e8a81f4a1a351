"""End-to-end discharge latency: an ADT^A03 sent over MLLP on loopback until its ACK comes
back, with the Patient/Encounter stored and discharge processing (medication reconciliation,
LACE, transitional-care Tasks, CarePlan) committed; then the A13 that cancels each discharge
(Tasks cancelled, List retired, one commit). Baseline in the same run: parsing the A03 and
building its ACK, with nothing stored (the floor of any HL7 receiver).

Prints `name=value` lines. Run: `python benchmarks/bench_discharge.py [--n 100]`.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fhircare.bootstrap import build_container
from fhircare.config import Settings
from fhircare.services.intake import Hl7Intake
from fhircare.store.base import WriteOp
from fhircare.transitions.hl7v2 import parse_adt
from fhircare.transitions.hl7v2_ack import build_ack
from fhircare.transitions.mllp import MllpDecoder, frame, serve_mllp

# Times of a stay that ended an hour ago: within the follow-up window whenever this runs.
_ENDED = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
SENT = (_ENDED + timedelta(minutes=30)).strftime("%Y%m%d%H%M%S")
ADMITTED = (_ENDED - timedelta(days=5)).strftime("%Y%m%d%H%M%S")
ENDED = _ENDED.strftime("%Y%m%d%H%M%S")

MEDS = [("197361", "amlodipine 5 MG Oral Tablet"), ("314076", "lisinopril 10 MG Oral Tablet"),
        ("860975", "metformin hydrochloride 500 MG Extended Release Oral Tablet"),
        ("310798", "hydrochlorothiazide 25 MG Oral Tablet")]


def a03(n: int) -> bytes:
    return (
        f"MSH|^~\\&|ADT|GENHOSP|FHIRCARE|CM|{SENT}||ADT^A03^ADT_A03|BENCH{n}|P|2.5.1\r"
        f"EVN|A03|{SENT}\r"
        f"PID|1||MRN{n}^^^GENHOSP^MR||Bench^Patient{n}||19500101|F\r"
        f"PV1|1|I|W1^101^A||||||||||||||||V{n}^^^GENHOSP^VN|||||||||||||||||01|||||||"
        f"|{ADMITTED}|{ENDED}\r"
        f"DG1|1||I50.9^Heart failure, unspecified^I10|||A\r"
    ).encode()


def a13(n: int) -> bytes:
    """The cancel of discharge n, as some feeds send it (no admit or discharge time)."""
    return (
        f"MSH|^~\\&|ADT|GENHOSP|FHIRCARE|CM|{SENT}||ADT^A13^ADT_A01|BENCHC{n}|P|2.5.1\r"
        f"EVN|A13|{SENT}\r"
        f"PID|1||MRN{n}^^^GENHOSP^MR||Bench^Patient{n}||19500101|F\r"
        f"PV1|1|I|W1^101^A||||||||||||||||V{n}^^^GENHOSP^VN\r"
    ).encode()


def seed_meds(store, n: int) -> None:  # noqa: ANN001
    """Pre-admission medications for patient n (as MedicationStatements on a Patient id)."""
    pid = f"bench-{n}"
    ops = [WriteOp("update", "Patient", id=pid, resource={
        "resourceType": "Patient", "identifier": [
            {"system": "http://fhircare.org/fhir/sid/hl7v2/GENHOSP", "value": f"MRN{n}"}]})]
    for i, (code, text) in enumerate(MEDS):
        ops.append(WriteOp("update", "MedicationStatement", id=f"{pid}-m{i}", resource={
            "resourceType": "MedicationStatement", "status": "active",
            "medicationCodeableConcept": {"coding": [{
                "system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": code}],
                "text": text},
            "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": "2026-01-01"}))
    store.commit(ops)


def send(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(frame(payload))
        decoder = MllpDecoder()
        while True:
            got = decoder.feed(s.recv(65536))
            if got:
                return got[0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        container = build_container(Settings(data=Path(tmp) / "d"))
        intake = Hl7Intake(container.bundles)
        for i in range(args.n):
            seed_meds(container.store, i)
        loop = asyncio.new_event_loop()
        server_ready = threading.Event()
        port_box: list[int] = []

        async def handler(raw: bytes) -> bytes:
            return await asyncio.to_thread(intake.handle, raw)

        async def start() -> None:
            server = await serve_mllp("127.0.0.1", 0, handler)
            port_box.append(server.sockets[0].getsockname()[1])
            server_ready.set()
            await server.serve_forever()

        threading.Thread(target=lambda: loop.run_until_complete(start()), daemon=True).start()
        server_ready.wait(10)
        port = port_box[0]
        send(port, a03(10_000))  # warm-up (imports, caches)
        e2e = []
        acks_ok = 0
        for i in range(args.n):
            t = time.perf_counter()
            ack = send(port, a03(i))
            e2e.append((time.perf_counter() - t) * 1000)
            acks_ok += b"MSA|AA|" in ack
        tasks = container.store.count("Task")
        lists = container.store.count("List")
        cancel = []
        for i in range(args.n):
            t = time.perf_counter()
            ack = send(port, a13(i))
            cancel.append((time.perf_counter() - t) * 1000)
            acks_ok += b"MSA|AA|" in ack
        cancelled = len(container.store.search("Task", [("status", "cancelled")]))
        base = []
        for i in range(args.n):
            t = time.perf_counter()
            build_ack(parse_adt(a03(i)), "AA")
            base.append((time.perf_counter() - t) * 1000)
        container.close()
    med, p99 = statistics.median(e2e), sorted(e2e)[int(0.99 * (len(e2e) - 1))]
    print(f"discharges={args.n}")
    print(f"acks_aa={acks_ok}")  # of the A03s and A13s
    print(f"tasks_written={tasks}")
    print(f"reconciled_lists_written={lists}")
    print(f"discharge_e2e_median_ms={med:.1f}")
    print(f"discharge_e2e_p99_ms={p99:.1f}")
    print(f"tasks_cancelled_by_a13={cancelled}")
    print(f"cancel_e2e_median_ms={statistics.median(cancel):.1f}")
    print(f"baseline_parse_ack_median_ms={statistics.median(base):.2f}")
    print(f"ratio_e2e_over_parse_ack={med / statistics.median(base):.1f}")
    print(f"ratio_cancel_over_parse_ack={statistics.median(cancel) / statistics.median(base):.1f}")
    print(f"target_under_100ms={'yes' if med < 100 else 'no'}")


if __name__ == "__main__":
    main()
