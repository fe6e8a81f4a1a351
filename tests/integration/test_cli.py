"""The `fhircare` command as a user meets it: help, version, and one-line errors (exit 2)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

EXAMPLE = ROOT / "examples" / "discharge-bundle.json"


def fhircare(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FHIRCARE_")}
    return subprocess.run(
        [sys.executable, "-m", "fhircare", *args],
        env={**clean, "COLUMNS": "100", "TERM": "dumb", **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("args", [["--help"], ["-h"], ["serve", "-h"], ["reconcile", "--help"]])
def test_help_renders_plain_type_names(args: list[str]) -> None:
    out = fhircare(*args)
    assert out.returncode == 0, out.stderr
    assert "Usage: fhircare" in out.stdout
    # typer 0.27+ prints <bool>, <str>, <int> labels and {bundle} placeholders
    assert not re.search(r"<(bool|str|int|path)>|\{\w+\}", out.stdout), out.stdout


def test_help_lists_every_command_and_option() -> None:
    top = fhircare("--help").stdout
    for command in ("serve", "demo", "reconcile", "mllp", "sync", "--version"):
        assert command in top
    serve = fhircare("serve", "--help").stdout
    assert re.search(r"--port\s+INTEGER", serve) and re.search(r"--data\s+PATH", serve)
    assert re.search(
        r"Usage: fhircare reconcile \[OPTIONS\] BUNDLE", fhircare("reconcile", "-h").stdout
    )


def test_version() -> None:
    from fhircare import __version__

    out = fhircare("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"fhircare {__version__}"


def _one_line_error(out: subprocess.CompletedProcess) -> str:
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert "Traceback" not in out.stderr and len(lines) == 1, out.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"FHIRCARE_PORT": "abc"}, "FHIRCARE_PORT='abc': Input should be a valid integer"),
        ({"FHIRCARE_PORT": "70000"}, "FHIRCARE_PORT=70000 is not a TCP port"),
        ({"FHIRCARE_STORE": "hapi"}, "FHIRCARE_STORE=hapi needs FHIRCARE_HAPI_URL"),
        ({"FHIRCARE_STORE": "mongo"}, "FHIRCARE_STORE='mongo': Input should be 'embedded' or"),
        ({"FHIRCARE_AUTH": "smart"}, "FHIRCARE_AUTH=smart needs FHIRCARE_AUTH_JWKS"),
        ({"FHIRCARE_LOG_LEVEL": "LOUD"}, "FHIRCARE_LOG_LEVEL='LOUD'"),
    ],
)
def test_configuration_errors_are_one_line(
    env: dict[str, str], expected: str, tmp_path: Path
) -> None:
    line = _one_line_error(fhircare("serve", "--data", str(tmp_path / "d"), env=env))
    assert expected in line
    assert not (tmp_path / "d").exists(), "a refused configuration must not create the store"


def test_two_configuration_errors_are_two_lines() -> None:
    out = fhircare("serve", env={"FHIRCARE_STORE": "mongo", "FHIRCARE_FSYNC": "maybe"})
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 2 and "FHIRCARE_STORE" in lines[0] and "FHIRCARE_FSYNC" in lines[1]


def _bundle(tmp_path: Path, edit) -> Path:  # noqa: ANN001 - a function that edits the Bundle
    bundle = json.loads(EXAMPLE.read_text())
    edit(bundle)
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(bundle))
    return path


def test_reconcile_input_errors_are_one_line(tmp_path: Path) -> None:
    assert "is a directory" in _one_line_error(fhircare("reconcile", str(tmp_path)))
    assert "no such file" in _one_line_error(fhircare("reconcile", str(tmp_path / "none.json")))
    (tmp_path / "broken.json").write_text('{"resourceType": "Bundle",')
    assert "not valid JSON" in _one_line_error(fhircare("reconcile", str(tmp_path / "broken.json")))
    (tmp_path / "huge.json").write_text('{"resourceType": "Bundle", "total": ' + "9" * 5000 + "}")
    line = _one_line_error(fhircare("reconcile", str(tmp_path / "huge.json")))
    assert "not valid JSON" in line and "5000 digits" in line and len(line) < 300

    def text_dose(b: dict) -> None:
        b["entry"][2]["resource"]["dosage"][0]["doseAndRate"][0]["doseQuantity"]["value"] = "two"

    line = _one_line_error(fhircare("reconcile", str(_bundle(tmp_path, text_dose))))
    assert "doseQuantity.value" in line

    def bad_type(b: dict) -> None:
        b["type"] = "collectionX"

    assert "Bundle.type" in _one_line_error(fhircare("reconcile", str(_bundle(tmp_path, bad_type))))

    def bad_date(b: dict) -> None:
        b["entry"][1]["resource"]["period"]["end"] = "2026-11-31T10:00:00Z"

    assert "period.end" in _one_line_error(fhircare("reconcile", str(_bundle(tmp_path, bad_date))))


def test_reconcile_the_example_bundle() -> None:
    out = fhircare("reconcile", str(EXAMPLE), "--json")
    assert out.returncode == 0, out.stderr
    items = {i["ingredient"]: i for i in json.loads(out.stdout)["items"]}
    assert items["furosemide"]["status"] == "changed" and items["furosemide"]["changes"] == ["dose"]
    assert items["lisinopril"]["status"] == "discontinued"
