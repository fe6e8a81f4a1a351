"""Hostile-app probes of the access gate: seeded random requests with patient A's tokens.

    python benchmarks/probe_gate.py [--probes 500] [--seed 16]

Uses the generators and the independent oracle of
`tests/integration/test_access_gate_properties.py` (random resources for patients A and B
across the care types; every interaction; SMART v1 read, v1 read+write, v2 cruds, v2
granular tokens) without stopping at the first failure, so a run counts every failing probe.
Prints `name=value` lines: probes, failing probes, and per class leaks (a resource A's
token may not see was returned), wrong totals (a search's total or a 412 "matched N" counted
other patients' data), unauthorized writes (B's record changed, or a write no scope allowed)
and server errors (5xx).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import tempfile
from collections import Counter
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient
from jwt.algorithms import RSAAlgorithm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fhircare.api.app import create_app  # noqa: E402
from fhircare.config import Settings  # noqa: E402
from tests.integration import test_access_gate_properties as gen  # noqa: E402


def _app(tmp: Path) -> tuple[TestClient, object]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid="k", alg="RS256", use="sig")
    (tmp / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    conf = Settings(
        data=tmp / "d",
        base_url=gen.AUD,
        auth="smart",
        auth_jwks=str(tmp / "jwks.json"),
        auth_issuer=gen.ISS,
        auth_audience=gen.AUD,
        fsync=False,
        audit=False,
        sweep_interval=0,
    )
    return TestClient(create_app(conf), raise_server_exceptions=False), key


def run(probes: int, seed: int) -> Counter[str]:
    rng = random.Random(seed)
    counts: Counter[str] = Counter()
    client, key = _app(Path(tempfile.mkdtemp(prefix="probe-gate-")))
    with client as c:
        s = gen.Server(c, key)
        known = [{"resourceType": "Patient", "id": s.a}, {"resourceType": "Patient", "id": s.b}]
        while counts["probes"] < probes:
            for _ in range(rng.randint(1, 3)):
                rtype, who = rng.choice(gen.CARE_TYPES), rng.choice("AB")
                other = rng.choice([None, s.a, s.b])
                owner = s.a if who == "A" else s.b
                known.append(s._post(gen.resource(rtype, owner, other, rng.randint(0, 3))))
            token = rng.choice(sorted(gen.TOKENS))
            headers = s.bearer(gen.TOKENS[token], patient=s.a)
            probe = (
                rng.choice(gen.INTERACTIONS),
                rng.choice(gen.CARE_TYPES),
                rng.choice("AB"),
                rng.choice([None, "A", "B"]),
                rng.randint(0, 3),
                rng.randint(0, 1000),
            )
            before = s.snapshot()
            response, search = gen.send(s, headers, token, probe, known)
            if response is None:
                continue
            counts["probes"] += 1
            failed = set()
            if response.status_code >= 500:
                failed.add("server_errors")
            else:
                body = response.json() if response.content else None
                if any(not gen.visible(token, s, r) for r in gen.returned_resources(body)):
                    failed.add("leaks")
                counted: int | None = None
                if search and response.status_code == 200 and body.get("type") == "searchset":
                    counted = body.get("total")
                matched = re.search(r"matched (\d+)", response.text)
                if search and response.status_code == 412 and matched:
                    counted = int(matched[1])
                if counted is not None and counted != gen.visible_total(s, token, *search):
                    failed.add("wrong_totals")
            if gen._changed_unlawfully(s, token, before, s.snapshot()):
                failed.add("unauthorized_writes")
            counts.update(failed)
            counts["failing_probes"] += bool(failed)
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--probes", type=int, default=500)
    ap.add_argument("--seed", type=int, default=16)
    args = ap.parse_args()
    counts = run(args.probes, args.seed)
    for name in (
        "probes",
        "failing_probes",
        "leaks",
        "wrong_totals",
        "unauthorized_writes",
        "server_errors",
    ):
        print(f"{name}={counts[name]}")  # noqa: T201


if __name__ == "__main__":
    main()
