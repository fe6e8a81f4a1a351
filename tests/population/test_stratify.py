"""`fhircare population stratify` on a folder: malformed lines reported with file and line
and skipped, resume from the checkpoints, idempotent write-back into the embedded store and
into a real HAPI server, and one-line errors."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from fhircare.cli import app
from fhircare.conformance import load_conformance_resources, validate
from fhircare.fhir.profiles import problems
from fhircare.fhir.validation import validate_resource
from fhircare.population.generate import generate
from fhircare.population.stratify import results
from fhircare.store.embedded import EmbeddedStore

AS_OF = date(2025, 3, 1)
NOW = "2025-03-01T12:00:00Z"
runner = CliRunner()


@pytest.fixture(scope="module")
def panel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """120 patients as .ndjson.gz under an odd name, plus a file with three bad lines."""
    folder = tmp_path_factory.mktemp("panel")
    made = generate(folder / "gen", 120, seed=5, as_of=AS_OF, compress=True)
    (folder / "gen" / "Patient.ndjson.gz").rename(folder / "gen" / "people-part-1.ndjson.gz")
    good = json.dumps({"resourceType": "Patient", "id": "extra-1"})
    lines = [good, '{"resourceType": "Patient", "id": ', "", '{"id": "x"}', "[1, 2]"]
    (folder / "more.ndjson").write_text("\n".join(lines) + "\n")
    assert made.counts["Patient"] == 120
    return folder


def _stratify(panel: Path, out: Path, *extra: str) -> Any:
    args = ["population", "stratify", "--source", str(panel), "--out", str(out), "--now", NOW]
    return runner.invoke(app, [*args, *extra])


def test_malformed_lines_are_reported_with_file_and_line_and_skipped(
    spark: Any, panel: Path, tmp_path: Path
) -> None:
    outcome = _stratify(panel, tmp_path / "run")
    assert outcome.exit_code == 0, outcome.output
    more = panel / "more.ndjson"
    assert f"{more}:2: not valid JSON (cut short)" in outcome.output
    assert f"{more}:4: no resourceType" in outcome.output
    assert f"{more}:5: not a JSON object" in outcome.output
    assert "malformed lines skipped: 3" in outcome.output
    found = {r["patient"] for r in results(tmp_path / "run")}
    assert len(found) == 121 and "Patient/extra-1" in found  # the good line of that file


def test_a_rerun_resumes_from_the_checkpoints(spark: Any, panel: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert _stratify(panel, out).exit_code == 0
    first = (out / "results.ndjson").read_text()
    again = _stratify(panel, out)
    assert again.exit_code == 0, again.output
    assert "resumed: ingest, facts, decide" in again.output
    # a run stopped after the facts stage redoes only what is missing
    (out / "checkpoints" / "decide.json").unlink()
    (out / "results.ndjson").unlink()
    resumed = _stratify(panel, out)
    assert resumed.exit_code == 0, resumed.output
    assert "resumed: ingest, facts" in resumed.output
    assert (out / "results.ndjson").read_text() == first
    # stopped after ingest: the facts parse the export again, the malformed lines stay known
    for stage in ("facts", "decide"):
        (out / "checkpoints" / f"{stage}.json").unlink()
    shutil.rmtree(out / "facts")
    (out / "results.ndjson").unlink()
    resumed = _stratify(panel, out)
    assert resumed.exit_code == 0, resumed.output
    assert "resumed: ingest already done" in resumed.output, resumed.output
    assert "malformed lines skipped: 3" in resumed.output
    assert (out / "results.ndjson").read_text() == first


def _counts(store: EmbeddedStore) -> dict[str, int]:
    return {t: len(list(store.iter_resources(t))) for t in ("Group", "Flag", "Task")}


def test_write_back_is_idempotent_and_valid(spark: Any, panel: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    out = tmp_path / "run"
    outcome = _stratify(panel, out, "--write-back", "--tasks", "--data", str(data))
    assert outcome.exit_code == 0, outcome.output
    answers = list(results(out))
    high = sum(r["highRisk"] for r in answers)
    store = EmbeddedStore(data)
    try:
        counts = _counts(store)
        groups = list(store.iter_resources("Group"))
        for resource in (
            groups + list(store.iter_resources("Flag")) + list(store.iter_resources("Task"))
        ):
            validate_resource(resource)
            assert not problems(resource), (resource["resourceType"], problems(resource))
        task = next(iter(store.iter_resources("Task")))
    finally:
        store.close()
    assert counts["Flag"] == high and counts["Group"] == 3 and counts["Task"] > 0
    members = {m["entity"]["reference"]: m for g in groups for m in g.get("member", [])}
    eligible = {r["patient"] for r in answers if r["ccmEligible"]}
    assert eligible <= members.keys()
    some = next(r for r in answers if r["highRisk"] and r["ccmEligible"])
    reasons = [e["valueString"] for e in members[some["patient"]]["extension"]]
    assert reasons == some["reasons"]
    # the care team moves a Task on; a full rerun of the write-back adds nothing, keeps it
    store = EmbeddedStore(data)
    try:
        moved = {**task, "status": "in-progress"}
        from fhircare.store.base import WriteOp

        store.commit([WriteOp("update", "Task", id=task["id"], resource=moved)])
    finally:
        store.close()
    for mark in (out / "checkpoints").glob("writeback-*.json"):
        mark.unlink()
    again = _stratify(panel, out, "--write-back", "--tasks", "--data", str(data))
    assert again.exit_code == 0, again.output
    assert "Tasks already there" in again.output
    store = EmbeddedStore(data)
    try:
        assert _counts(store) == counts
        assert store.read("Task", task["id"])["status"] == "in-progress"
    finally:
        store.close()


@pytest.mark.hapi
def test_hapi_as_target_and_source(
    spark: Any, panel: Path, tmp_path: Path, hapi_recommended_url: str
) -> None:
    out = tmp_path / "run"
    args = ["--write-back", "--tasks", "--base", hapi_recommended_url]
    refused = _stratify(panel, out, *args)  # HAPI checks references: no Patients there yet
    assert refused.exit_code == 1 and "write-back stopped" in refused.output, refused.output
    with httpx.Client(base_url=hapi_recommended_url, timeout=120) as client:
        resources = [{"resourceType": "Patient", "id": "extra-1"}]
        for path in sorted((panel / "gen").glob("*.ndjson.gz")):
            with gzip.open(path, "rt") as fh:
                resources += [json.loads(line) for line in fh]
        resources.sort(key=lambda r: r["resourceType"] != "Patient")  # referenced first
        entries = [
            {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
            for r in resources
        ]
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
        assert client.post("", json=bundle).status_code == 200
    outcome = _stratify(panel, out, *args)  # resumes at the write-back
    assert outcome.exit_code == 0, outcome.output
    assert "resumed: ingest, facts, decide" in outcome.output

    def totals(client: httpx.Client) -> dict[str, int]:
        headers = {"Cache-Control": "no-cache"}
        return {
            t: client.get(f"/{t}", params={"_summary": "count"}, headers=headers).json()["total"]
            for t in ("Group", "Flag", "Task")
        }

    with httpx.Client(base_url=hapi_recommended_url, timeout=120) as client:
        first = totals(client)
        for mark in (out / "checkpoints").glob("writeback-*.json"):
            mark.unlink()
        assert _stratify(panel, out, *args).exit_code == 0
        assert totals(client) == first  # deterministic ids: updated, not added
        load_conformance_resources(client)
        headers = {"Cache-Control": "no-cache"}
        samples = [
            client.get(
                f"/{t}", params={"_count": "1", "_sort": "-_lastUpdated"}, headers=headers
            ).json()["entry"][0]["resource"]
            for t in ("Group", "Flag", "Task")
        ]
        findings = [validate(client, r) for r in samples]
    assert all(not f.messages for f in findings), [f.messages for f in findings]
    # HAPI as the source: its $export (kick-off, poll, download) read on Spark, same answers
    pulled = tmp_path / "from-hapi"
    outcome = runner.invoke(
        app,
        [
            "population",
            "stratify",
            "--source",
            "hapi",
            "--base",
            hapi_recommended_url,
            "--out",
            str(pulled),
            "--now",
            NOW,
        ],
    )
    assert outcome.exit_code == 0, outcome.output
    assert any((pulled / "export").iterdir())
    from_hapi = {r["patient"]: r for r in results(pulled)}
    from_dir = {r["patient"]: r for r in results(out)}
    assert from_dir.keys() <= from_hapi.keys()
    assert {k: from_hapi[k] for k in from_dir} == from_dir


def test_missing_java_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no java here
    outcome = runner.invoke(app, ["population", "stratify", "--source", str(tmp_path)])
    assert outcome.exit_code == 2
    lines = outcome.output.strip().splitlines()
    assert len(lines) == 1 and "Java not found" in lines[0], outcome.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--source", "no-such-folder"], "not a folder"),
        (["--source", ".", "--tasks"], "--tasks needs --write-back"),
        (["--source", ".", "--now", "yesterday"], "not a FHIR dateTime"),
    ],
)
def test_bad_options_are_one_line(args: list[str], message: str) -> None:
    outcome = runner.invoke(app, ["population", "stratify", *args])
    assert outcome.exit_code == 2 and message in outcome.output, outcome.output
    assert len(outcome.output.strip().splitlines()) == 1


def test_gzip_and_any_file_name_are_read(panel: Path) -> None:
    with gzip.open(panel / "gen" / "people-part-1.ndjson.gz", "rt") as fh:
        assert json.loads(fh.readline())["resourceType"] == "Patient"


def test_class_data_archive_is_recorded_then_used(spark: Any, panel: Path, tmp_path: Path) -> None:
    """The first run in a fresh cache records the JVM's class-data archive; the next maps it,
    with the same answers and no JVM chatter in the output."""
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}

    def run(out: Path) -> str:
        args = [
            "--source",
            str(panel),
            "--out",
            str(out),
            "--now",
            NOW,
            "--spark-master",
            "local[2]",
        ]
        done = subprocess.run(
            [sys.executable, "-m", "fhircare", "population", "stratify", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    first = run(tmp_path / "first")
    archives = list((tmp_path / "cache" / "fhircare").iterdir())
    assert len(archives) == 1 and archives[0].suffix == ".jsa", archives  # no temporary left
    assert archives[0].stat().st_size > 0
    again = run(tmp_path / "again")
    for output in (first, again):
        assert "cds" not in output and "Case finding of 121 patients" in output, output
    assert (tmp_path / "again" / "results.ndjson").read_text() == (
        tmp_path / "first" / "results.ndjson"
    ).read_text()


@pytest.mark.parametrize(
    ("flag", "setting"),
    [(["--no-class-archive"], {}), ([], {"FHIRCARE_SPARK_CLASS_ARCHIVE": "false"})],
)
def test_without_the_class_data_archive_nothing_is_cached(
    spark: Any, panel: Path, tmp_path: Path, flag: list[str], setting: dict[str, str]
) -> None:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), **setting}
    args = ["--source", str(panel), "--out", str(tmp_path / "run"), "--now", NOW, *flag]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "fhircare",
            "population",
            "stratify",
            *args,
            "--spark-master",
            "local[2]",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Case finding of 121 patients" in done.stdout, done.stdout
    assert not (tmp_path / "cache").exists()
