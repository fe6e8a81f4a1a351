"""`fhircare serve` as a real process on loopback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

from tests.conftest import ServerProcess, free_port, wait_http


def test_help_lists_the_commands() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "fhircare", "--help"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0
    for command in ("serve", "demo", "reconcile", "mllp", "sync"):
        assert command in out.stdout


def test_serve_over_http_and_refuse_a_second_owner(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.base, timeout=10) as c:
        r = c.post(
            "/Patient",
            json={"resourceType": "Patient", "name": [{"family": "Real"}]},
            headers={"Content-Type": "application/fhir+json"},
        )
        assert r.status_code == 201
        assert c.get(f"/Patient/{r.json()['id']}").json()["name"][0]["family"] == "Real"
        assert (server.data / "journal.log").exists()
    second = subprocess.run(
        [
            sys.executable,
            "-m",
            "fhircare",
            "serve",
            "--port",
            str(free_port()),
            "--data",
            str(server.data),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 2
    assert "in use by another fhircare process" in second.stderr


def test_data_folder_from_environment(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "FHIRCARE_DATA": str(tmp_path / "env-data")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fhircare", "serve", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stderr=subprocess.PIPE,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/fhir/metadata", 60, proc)
        assert (tmp_path / "env-data" / "journal.log").exists()
        assert not (tmp_path / ".fhircare").exists()
    finally:
        proc.terminate()
        proc.wait(15)
