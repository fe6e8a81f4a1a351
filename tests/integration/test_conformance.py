"""Every kind of resource the test suite wrote validates on the real HAPI server, against
the base R4 specification and the project's own profiles (StructureDefinitions loaded
first). Runs last (see conftest): it checks what the other tests produced."""

from __future__ import annotations

import httpx
import pytest

from fhircare.commands.demo import local_client, run_demo
from fhircare.config import Settings
from fhircare.conformance import load_conformance_resources, sample, validate
from tests.conftest import PRODUCED

pytestmark = [pytest.mark.hapi, pytest.mark.conformance]

OWN = "http://fhircare.org/fhir/StructureDefinition/"


def test_resources_written_by_the_suite_conform(hapi_base_url: str, tmp_path) -> None:
    # The demo runs the whole cycle, so the check never depends on which tests were selected.
    with local_client(Settings(data=tmp_path / "demo", sweep_interval=0)) as client:
        run_demo(client)
    produced = [r for r in PRODUCED if r.get("resourceType") != "AuditEvent"]
    own = [
        r
        for r in produced
        if any(p.startswith(OWN) for p in (r.get("meta") or {}).get("profile") or [])
    ]
    assert own, "the suite wrote no resource claiming a fhircare profile"
    chosen = sample(produced, per_shape=2)
    with httpx.Client(base_url=hapi_base_url, timeout=60) as client:
        assert load_conformance_resources(client) > 10
        findings = [validate(client, r) for r in chosen]
    failed = [f for f in findings if f.messages]
    report = "\n".join(
        f"{f.resource_type}/{f.id} ({f.profile}): " + " | ".join(f.messages[:3])
        for f in failed[:40]
    )
    profiles_checked = {f.profile for f in findings if f.profile}
    assert len(profiles_checked) >= 8, profiles_checked
    assert not failed, f"{len(failed)} of {len(findings)} resources do not conform:\n{report}"
