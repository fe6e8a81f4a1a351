"""The Spark path gives every patient the same answer as `/care/eligibility` of a real
`fhircare serve` (program, tier, reasons), on a generated panel of a few hundred patients:
the panel goes into the server through its REST API (which also derives social-needs
Conditions from the completed screenings), then `fhircare population stratify --source
fhircare` reads the server's store."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from typer.testing import CliRunner

from fhircare.cli import app
from fhircare.population.generate import TYPES, generate
from fhircare.population.stratify import results
from tests.conftest import ServerProcess

PATIENTS = 300


def _load(client: httpx.Client, folder: Path) -> int:
    """PUT the panel into the server, in transaction Bundles (Patients first)."""
    resources: list[dict[str, Any]] = []
    for rtype in TYPES:
        with (folder / f"{rtype}.ndjson").open() as fh:
            resources += [json.loads(line) for line in fh]
    for i in range(0, len(resources), 400):
        entries = [
            {
                "resource": r,
                "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"},
            }
            for r in resources[i : i + 400]
        ]
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
        resp = client.post("/fhir", json=bundle)
        assert resp.status_code == 200, resp.text[:500]
    return len(resources)


def test_spark_and_care_eligibility_agree_for_every_patient(spark: Any, tmp_path: Path) -> None:
    panel = generate(tmp_path / "panel", PATIENTS, seed=11)  # as of today: the API's clock
    server = ServerProcess(tmp_path / "srv").start()
    try:
        root = server.base.removesuffix("/fhir")
        with httpx.Client(base_url=root, timeout=120) as client:
            assert _load(client, panel.folder) == sum(panel.counts.values())
            now = datetime.now(UTC)
            api = {}
            for i in range(PATIENTS):
                ref = f"Patient/p11-{i}"
                resp = client.get("/care/eligibility", params={"patient": ref})
                assert resp.status_code == 200, resp.text
                api[ref] = resp.json()
    finally:
        server.stop()
    run = tmp_path / "run"
    args = ["population", "stratify", "--source", "fhircare", "--data", str(server.data)]
    args += ["--out", str(run), "--now", now.isoformat()]
    outcome = CliRunner().invoke(app, args)
    assert outcome.exit_code == 0, outcome.output
    assert f"Case finding of {PATIENTS} patients" in outcome.output
    found = {r["patient"]: r for r in results(run)}
    assert found.keys() == api.keys()
    differ = [ref for ref in api if found[ref] != api[ref]]
    assert not differ, "\n".join(f"{api[r]}\n{found[r]}" for r in differ[:3])
    # the panel exercises every tier and several kinds of reason
    tiers = {r["tier"] for r in api.values()}
    assert tiers == {"high", "moderate", "low"}
    reasons = " ".join(" ".join(r["reasons"]) for r in api.values())
    for kind in ("chronic conditions", "discharged", "social need", "PHQ-9", "not CCM eligible"):
        assert kind in reasons, kind
