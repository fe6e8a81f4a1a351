"""A closed-loop load generator for `bench_api.py --clients N`: N concurrent FHIR clients, each
sending its next request as soon as the previous one is answered, for a fixed time.

The mix (30% creates, 40% reads, 30% name searches; or `READS`, reads only) is drawn per
request from a seeded RNG. Clients are shared out over several generator processes (asyncio
on uvloop where installed, one keep-alive connection per client through `lean_http`), so the
generator is not held to one core by the GIL; each process reports the CPU time it used, so
a run shows whether the generator, rather than the server, was the limit. Every answer is
checked (status, and the id or the number of matches); a wrong answer or a transport error
counts as an error, never as a latency.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from lean_http import Connection, HttpError

try:
    import uvloop
except ImportError:  # the standard event loop: the same requests, more generator CPU
    uvloop = None

MRN = "http://fhircare.org/fhir/sid/bench-mrn"
HEADERS = {
    "Content-Type": "application/fhir+json",
    "Accept": "application/fhir+json",
    # HAPI answers a search repeated within 60 s from its first results by default; the
    # benchmark measures searching, so it asks both servers for fresh answers.
    "Cache-Control": "no-cache",
}
MIX = (("create", 0.30), ("read", 0.40), ("search_name", 0.30))
READS = (("read", 1.0),)  # reads only: what a server that answers nothing else can take
SURNAMES = 400  # distinct family names of the seeded patients (5 patients each)


def family(i: int) -> str:
    """The i-th seeded family name: distinct in its first letters, as real names are."""
    rng = random.Random(i)
    letters = "".join(rng.choice("bcdfghjklmnprstvz") + rng.choice("aeiou") for _ in range(4))
    return letters.capitalize() + f"{i:03d}"


def patient(family_name: str) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": MRN, "value": uuid.uuid4().hex[:16]}],
        "name": [{"family": family_name, "given": ["Load"]}],
        "gender": "female",
        "birthDate": "1961-03-02",
    }


def seed_bundle(start: int, count: int) -> dict[str, Any]:
    """A transaction of `count` Patients, 5 per family name from `start // 5` on."""
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": patient(family((start + i) // 5 % SURNAMES)),
                "request": {"method": "POST", "url": "Patient"},
            }
            for i in range(count)
        ],
    }


@dataclass
class Share:
    """One generator process's part of a run."""

    base: str
    clients: int
    duration: float
    start_at: float  # time.time() at which every process starts sending
    ids: list[str]
    seed: int
    mix: tuple[tuple[str, float], ...] = MIX


@dataclass
class Tally:
    latencies: dict[str, list[float]] = field(default_factory=dict)  # ms per request kind
    errors: int = 0
    first_errors: list[str] = field(default_factory=list)
    cpu_seconds: float = 0.0
    elapsed: float = 0.0

    def merge(self, other: Tally) -> None:
        for kind, values in other.latencies.items():
            self.latencies.setdefault(kind, []).extend(values)
        self.errors += other.errors
        self.first_errors += other.first_errors[: 5 - len(self.first_errors)]
        self.cpu_seconds += other.cpu_seconds
        self.elapsed = max(self.elapsed, other.elapsed)


def _pick(rng: random.Random, mix: tuple[tuple[str, float], ...]) -> str:
    x = rng.random()
    for kind, share in mix:
        if x < share:
            return kind
        x -= share
    return mix[-1][0]


async def _client(share: Share, rng: random.Random, tally: Tally, deadline: float) -> None:
    http = Connection(share.base, HEADERS, timeout=60.0)
    try:
        while time.perf_counter() < deadline:
            await _one(http, share, rng, tally)
    finally:
        await http.close()


async def _one(http: Connection, share: Share, rng: random.Random, tally: Tally) -> None:
    kind = _pick(rng, share.mix)
    started = time.perf_counter()
    try:
        if kind == "create":
            # a family name of its own: the searched names keep exactly 5 matches
            body = json.dumps(patient(f"Made{uuid.uuid4().hex[:12]}")).encode()
            r = await http.request("POST", "Patient", body)
            ok = r.status == 201
        elif kind == "read":
            pid = rng.choice(share.ids)
            r = await http.request("GET", f"Patient/{pid}")
            ok = r.status == 200 and json.loads(r.body).get("id") == pid
        else:
            name = family(rng.randrange(SURNAMES))
            r = await http.request("GET", "Patient", query={"name": name})
            found = json.loads(r.body) if r.status == 200 else {}
            ok = r.status == 200 and len(found.get("entry") or []) == 5
        problem = None if ok else f"{kind}: {r.status} {r.text[:200]}"
    except HttpError as exc:
        problem = f"{kind}: {exc}"
    ms = (time.perf_counter() - started) * 1000
    if problem is None:
        tally.latencies.setdefault(kind, []).append(ms)
    else:
        tally.errors += 1
        if len(tally.first_errors) < 5:
            tally.first_errors.append(problem)


async def _run(share: Share) -> Tally:
    tally = Tally()
    await asyncio.sleep(max(0.0, share.start_at - time.time()))
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    deadline = t0 + share.duration
    rngs = [random.Random(share.seed * 1000 + i) for i in range(share.clients)]
    await asyncio.gather(*(_client(share, rng, tally, deadline) for rng in rngs))
    tally.elapsed = time.perf_counter() - t0
    tally.cpu_seconds = time.process_time() - cpu0
    return tally


def run_share(share: Share) -> Tally:
    """Entry point of one generator process."""
    if uvloop is not None:
        return uvloop.run(_run(share))
    return asyncio.run(_run(share))


def run_load(
    pool: ProcessPoolExecutor,
    processes: int,
    base: str,
    clients: int,
    duration: float,
    ids: list[str],
    seed: int,
    mix: tuple[tuple[str, float], ...] = MIX,
) -> Tally:
    """N clients spread over the pool's processes, all starting at the same moment."""
    start_at = time.time() + 1.0
    per = [clients // processes + (1 if i < clients % processes else 0) for i in range(processes)]
    shares = [
        Share(base, n, duration, start_at, ids, seed * 100 + i, mix) for i, n in enumerate(per) if n
    ]
    total = Tally()
    for tally in pool.map(run_share, shares):
        total.merge(tally)
    return total
