"""fhircare as a package manager installs it: the wheel (not an editable install) in a clean
venv, run from a folder outside the source tree. Its knowledge files (profiles/, mappings/)
must come from the wheel itself: reconciliation and an A03 discharge depend on them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, free_port, wait_http

pytestmark = pytest.mark.slow

EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="module")
def wheel_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin folder of a fresh venv holding only the built wheel and its dependencies."""
    work = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(work), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (wheel,) = work.glob("fhircare-*.whl")
    env_dir = work / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)],
        check=True,
        capture_output=True,
        timeout=900,
    )
    return env_dir / "bin"


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FHIRCARE_")}
    env.pop("PYTHONPATH", None)
    return {**env, "HOME": str(home)}


def test_the_wheel_carries_its_knowledge_files(wheel_bin: Path, tmp_path: Path) -> None:
    out = subprocess.run(
        [
            str(wheel_bin / "python"),
            "-c",
            "import fhircare, fhircare.paths as p; "
            "print(fhircare.__file__); print(p.profiles_dir()); print(p.mappings_dir())",
        ],
        cwd=tmp_path,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        check=True,
    )
    module, profiles, mappings = out.stdout.split()
    venv_root = str(wheel_bin.parent)
    assert module.startswith(venv_root) and profiles.startswith(venv_root)
    assert (Path(profiles) / "PlanDefinition-transitional-care.json").is_file()
    assert (Path(mappings) / "medications.yaml").is_file()


def test_reconcile_from_the_wheel(wheel_bin: Path, tmp_path: Path) -> None:
    run = subprocess.run(
        [
            str(wheel_bin / "fhircare"),
            "reconcile",
            str(EXAMPLES / "discharge-bundle.json"),
            "--json",
        ],
        cwd=tmp_path,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    statuses = {i["ingredient"]: i["status"] for i in result["items"]}
    assert statuses == {
        "metformin": "continued",
        "furosemide": "changed",
        "lisinopril": "discontinued",
        "apixaban": "new",
    }


@pytest.fixture
def wheel_server(wheel_bin: Path, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [str(wheel_bin / "fhircare"), "serve", "--port", str(port), "--data", "data"],
        cwd=tmp_path,
        env=_env(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/fhir/metadata", 90, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(30)


def test_a03_discharge_through_the_wheel(wheel_server: str) -> None:
    with httpx.Client(base_url=wheel_server, timeout=60) as c:
        ack = c.post(
            "/hl7v2",
            content=(EXAMPLES / "adt-a03.hl7").read_bytes(),
            headers={"Content-Type": "x-application/hl7-v2+er7"},
        )
        assert ack.status_code == 200
        assert "MSA|AA|EXAMPLE-A03-1" in ack.text, ack.text
        tasks = c.get("/fhir/Task", params={"_count": "100"}).json()
        lists = c.get("/fhir/List").json()
    codes = {
        coding["code"]
        for e in tasks.get("entry", [])
        for coding in e["resource"].get("code", {}).get("coding", [])
    }
    assert tasks["total"] >= 3 and codes, "the discharge opened no transitional-care Tasks"
    assert lists["total"] >= 1, "no reconciled medication List was stored"
