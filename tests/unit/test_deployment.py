"""docker-compose.yml and the Dockerfile, checked as far as possible without an engine."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fhircare.config import Settings
from tests.conftest import ROOT, free_port

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def _hapi_version() -> str:
    found = re.search(
        r"<hapi.version>([^<]+)</hapi.version>", (ROOT / "hapi-server/pom.xml").read_text()
    )
    assert found, "hapi-server/pom.xml names no hapi.version"
    return found.group(1)


def test_hapi_is_the_official_image_of_the_tested_version() -> None:
    image = SERVICES["hapi"]["image"]
    assert image == f"hapiproject/hapi:v{_hapi_version()}-1"


def test_hapi_has_no_healthcheck_that_needs_a_shell() -> None:
    # the official image is distroless: no /bin/sh, no wget, no curl
    check = SERVICES["hapi"].get("healthcheck")
    if check:
        test = check["test"]
        assert test[0] == "CMD" and test[1] not in ("sh", "bash", "wget", "curl"), test


def test_hapi_keeps_its_data_in_postgres_on_a_volume() -> None:
    hapi, db = SERVICES["hapi"], SERVICES["hapi-db"]
    assert db["image"].startswith("postgres:")
    assert any(v.endswith(":/var/lib/postgresql/data") for v in db["volumes"])
    volume = db["volumes"][0].split(":")[0]
    assert volume in COMPOSE["volumes"]
    env = hapi["environment"]
    assert env["SPRING_DATASOURCE_URL"].startswith("jdbc:postgresql://hapi-db:5432/")
    assert env["SPRING_DATASOURCE_USERNAME"] == db["environment"]["POSTGRES_USER"]
    assert hapi["depends_on"]["hapi-db"]["condition"] == "service_healthy"
    assert db["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]


def test_fhircare_settings_are_real_and_consistent() -> None:
    env = SERVICES["fhircare"]["environment"]
    fields = set(Settings.model_fields)
    for name in env:
        assert name.startswith("FHIRCARE_") and name[9:].lower() in fields, name
    assert env["FHIRCARE_HAPI_URL"] == "http://hapi:8080/fhir"
    assert env["FHIRCARE_SUBSCRIBE_ENDPOINT"] == "http://fhircare:8000/events/hapi"
    assert env["FHIRCARE_WEBHOOK_SECRET"]  # HAPI's notifications carry it
    published = SERVICES["fhircare"]["ports"]
    assert "127.0.0.1:8000:8000" in published
    assert f"127.0.0.1:{env['FHIRCARE_MLLP_PORT']}:{env['FHIRCARE_MLLP_PORT']}" in published
    assert all(p.startswith("127.0.0.1:") for s in SERVICES.values() for p in s.get("ports", []))
    assert any(v.endswith(":/data") for v in SERVICES["fhircare"]["volumes"])


def test_fhircare_healthcheck_uses_python() -> None:
    assert SERVICES["fhircare"]["healthcheck"]["test"] == [
        "CMD",
        "python",
        "-m",
        "fhircare.healthcheck",
    ]
    assert 'CMD ["python", "-m", "fhircare.healthcheck"]' in DOCKERFILE


def test_the_image_installs_the_wheel_and_runs_as_a_non_root_user() -> None:
    assert "pip install -e" not in DOCKERFILE and "--editable" not in DOCKERFILE
    assert re.search(r"pip wheel .* -w /wheels \.", DOCKERFILE)
    assert "pip install --no-cache-dir /wheels/*.whl" in DOCKERFILE
    users = re.findall(r"^USER (\S+)", DOCKERFILE, re.M)
    assert users and users[-1] not in ("root", "0")
    for needed in ("pyproject.toml", "setup.py", "fhircare", "profiles", "mappings"):
        assert re.search(rf"^COPY .*\b{re.escape(needed)}\b", DOCKERFILE, re.M), needed


@pytest.mark.parametrize("up", [True, False])
def test_healthcheck_module(up: bool, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    port = free_port()
    env = {**os.environ, "FHIRCARE_PORT": str(port)}
    if up:
        from tests.conftest import ServerProcess

        srv = ServerProcess(tmp_path / "d", port=port).start()
        request.addfinalizer(srv.stop)
    out = subprocess.run(
        [sys.executable, "-m", "fhircare.healthcheck"], env=env, capture_output=True, timeout=30
    )
    assert out.returncode == (0 if up else 1)
