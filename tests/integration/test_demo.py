"""`fhircare demo` as a user runs it: on its own data folder, a second time, against a
running server (`--server`), and while `fhircare serve` holds the folder."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx

from fhircare.commands.demo import local_client, run_demo
from fhircare.config import Settings
from fhircare.fhir.validation import validate_resource
from tests.conftest import ServerProcess

T2DM = "http://fhircare.org/fhir/PlanDefinition/t2dm"
REF = re.compile(r"^  ([A-Za-z]+/[A-Za-z0-9.-]+)\s+curl -s (\S+)$", re.M)


def t2dm_plans(c: httpx.Client) -> list[str]:
    bundle = c.get("/CarePlan", params={"subject": "Patient/demo-patient"}).json()
    return [
        e["resource"]["id"]
        for e in bundle.get("entry") or []
        if T2DM in (e["resource"].get("instantiatesCanonical") or [])
    ]


def demo(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FHIRCARE_")}
    return subprocess.run(
        [sys.executable, "-m", "fhircare", "demo", *args],
        env={**env, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_demo_runs_the_cycle_and_every_resource_it_prints_is_readable(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = demo("--data", str(data))
    assert first.returncode == 0, first.stderr
    out = first.stdout
    assert "HbA1c 9.2% -> 7.8%: goal 'HbA1c below 7%' is improving" in out
    assert "referral 'Referral to food pantry' rejected" in out
    made = REF.findall(out)
    types = {ref.split("/")[0] for ref, _ in made}
    assert {"CarePlan", "Goal", "Task", "ServiceRequest", "CareTeam", "Communication"} <= types
    assert all(url == f"http://127.0.0.1:8000/fhir/{ref}" for ref, url in made)

    srv = ServerProcess(data).start()  # "how to fetch it" works as printed (other port)
    try:
        with httpx.Client(base_url=srv.base, timeout=30) as c:
            for ref, _ in made:
                r = c.get(f"/{ref}")
                assert r.status_code == 200, ref
                validate_resource(r.json())
            plans = t2dm_plans(c)
            tasks = c.get("/Task", params={"_summary": "count"}).json()["total"]
            careplans = c.get("/CarePlan", params={"_summary": "count"}).json()["total"]
    finally:
        srv.stop()
    assert len(plans) == 1

    second = demo("--data", str(data))
    assert second.returncode == 0, second.stderr
    assert "The demo already ran here" in second.stdout
    srv = ServerProcess(data).start()
    try:
        with httpx.Client(base_url=srv.base, timeout=30) as c:
            assert t2dm_plans(c) == plans
            assert c.get("/Task", params={"_summary": "count"}).json()["total"] == tasks
            assert c.get("/CarePlan", params={"_summary": "count"}).json()["total"] == careplans
    finally:
        srv.stop()


def test_demo_against_a_running_server(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "served").start()
    try:
        by_url = demo("--server", srv.root)
        assert by_url.returncode == 0, by_url.stderr
        made = REF.findall(by_url.stdout)
        assert made and all(url == f"{srv.base}/{ref}" for ref, url in made)
        # the data folder is held by the running server: demo asks it instead of failing
        by_folder = demo("--data", str(srv.data))
        assert by_folder.returncode == 0, by_folder.stderr
        assert "The demo already ran here" in by_folder.stdout
        with httpx.Client(base_url=srv.base, timeout=30) as c:
            assert len(t2dm_plans(c)) == 1
    finally:
        srv.stop()


def test_demo_refuses_an_unreachable_server() -> None:
    out = demo("--server", "http://127.0.0.1:9")
    assert out.returncode == 2
    assert len(out.stderr.strip().splitlines()) == 1 and "error: http://127.0.0.1:9" in out.stderr


def test_demo_on_an_unseeded_server_loads_the_definitions(tmp_path: Path) -> None:
    settings = Settings(data=tmp_path / "d", seed_definitions=False, sweep_interval=0)
    with local_client(settings) as client:
        report = run_demo(client)
        assert client.get("/fhir/PlanDefinition/t2dm").status_code == 200
    assert not report.already_ran and any(r.startswith("CarePlan/") for r in report.made)
