"""`pull_export` and `fhircare population export` against real servers over loopback: a
`fhircare serve` process, HAPI with the recommended settings (Bulk export on, batch2 fast
tracking: seconds, not minutes), and stock HAPI, which has no `$export`."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fhircare.population.bulk_pull import BulkExportError, ExportNotSupported, pull_export
from tests.conftest import ServerProcess
from tests.helpers.panel import example_resources, group, panel_resources, transaction
from tests.integration.test_cli import fhircare

FHIR = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}


def _lines(paths: list[Path]) -> dict[str, list[dict]]:
    got: dict[str, list[dict]] = {}
    for path in paths:
        for line in path.read_text().splitlines():
            resource = json.loads(line)
            got.setdefault(resource["resourceType"], []).append(resource)
    return got


def _load(base: str, prefix: str) -> None:
    resources = panel_resources(4, prefix) + [group(f"{prefix}g", [f"{prefix}0", f"{prefix}1"])]
    r = httpx.post(base, json=transaction(resources), headers=FHIR, timeout=60)
    assert r.status_code == 200, r.text[:500]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {"FHIRCARE_BULK_FILE_LINES": "2", "FHIRCARE_BULK_RETRY_AFTER": "1"}
    srv = ServerProcess(tmp_path_factory.mktemp("bulk") / "data", env=env).start()
    _load(srv.base, "fp")
    r = httpx.post(srv.base, json=transaction(example_resources()), headers=FHIR, timeout=60)
    assert r.status_code == 200, r.text[:500]
    yield srv
    srv.stop()


def test_pull_from_fhircare_serve(served: ServerProcess, tmp_path: Path) -> None:
    seen: list[tuple[str, float | None]] = []
    paths = pull_export(
        served.base,
        tmp_path / "sys",
        types=["Patient", "Observation", "MedicationRequest"],
        on_progress=lambda m, f: seen.append((m, f)),
        max_poll_interval=1,
    )
    got = _lines(paths)
    for rtype in ("Patient", "Observation", "MedicationRequest"):
        total = httpx.get(f"{served.base}/{rtype}", params={"_summary": "count"}).json()["total"]
        assert len(got[rtype]) == total, rtype
    assert len([p for p in paths if p.name.startswith("Patient")]) == 3  # 5 at 2 a file
    assert seen[0] == ("kick-off", None) and seen[-1] == ("downloaded", 1.0)
    group_paths = pull_export(
        served.base, tmp_path / "grp", level="group", group_id="fpg", max_poll_interval=1
    )
    assert sorted(r["id"] for r in _lines(group_paths)["Patient"]) == ["fp0", "fp1"]
    # the job was deleted on the server when the pull finished
    jobs = list((served.data / "bulk").iterdir())
    assert jobs == [], jobs


def test_pull_errors_are_one_typed_line(served: ServerProcess, tmp_path: Path) -> None:
    with pytest.raises(BulkExportError, match=r"refused the export \(400\).*NoSuchType"):
        pull_export(served.base, tmp_path, types=["NoSuchType"])
    with pytest.raises(BulkExportError, match="404"):
        pull_export(served.base, tmp_path, level="group", group_id="missing")
    with pytest.raises(BulkExportError, match="needs a Group id"):
        pull_export(served.base, tmp_path, level="group")


def test_cli_export_from_fhircare(served: ServerProcess, tmp_path: Path) -> None:
    out = fhircare(
        "population", "export", "--source", served.base, "--out", str(tmp_path / "o"),
        "--type", "Patient,Condition", "--patients",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "exported 9 resources" in out.stdout
    assert {p.name for p in (tmp_path / "o").iterdir()} >= {"Patient.ndjson", "Condition.ndjson"}
    # --source fhircare: the server this configuration's `serve` runs; --since narrows it
    since = httpx.get(f"{served.base}/Patient/example-dana").json()["meta"]["lastUpdated"]
    env = {"FHIRCARE_PORT": str(served.port)}
    own = fhircare(
        "population", "export", "--source", "fhircare", "--out", str(tmp_path / "s"),
        "--type", "Patient", "--since", since, env=env,
    )  # fmt: skip
    assert own.returncode == 0, own.stderr
    exported = _lines(sorted((tmp_path / "s").glob("*.ndjson")))
    assert [r["id"] for r in exported["Patient"]] == ["example-dana"]  # loaded after the panel
    for args, needle in (
        (["--type", "Nope"], "--type"),
        (["--since", "last week"], "--since"),
        (["--group", "g", "--patients"], "exclude"),
    ):
        bad = fhircare(
            "population", "export", "--source", served.base, "--out", str(tmp_path), *args
        )
        assert bad.returncode == 2, bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1 and needle in bad.stderr
    bad = fhircare("population", "export", "--source", "ftp://x", "--out", str(tmp_path))
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


@pytest.mark.hapi
def test_pull_from_hapi_recommended_takes_seconds(
    hapi_recommended_url: str, tmp_path: Path
) -> None:
    prefix = f"bk{int(time.time() * 1000) % 10**8}x"
    _load(hapi_recommended_url, prefix)
    start = time.monotonic()
    paths = pull_export(
        hapi_recommended_url,
        tmp_path / "grp",
        level="group",
        group_id=f"{prefix}g",
        types=["Patient", "Condition", "Observation", "Encounter"],
        max_poll_interval=1,
    )
    elapsed = time.monotonic() - start
    got = {t: sorted(r["id"] for r in v) for t, v in _lines(paths).items()}
    assert got == {
        "Patient": [f"{prefix}0", f"{prefix}1"],
        "Condition": [f"{prefix}0-c", f"{prefix}1-c"],
        "Observation": [f"{prefix}0-o", f"{prefix}1-o"],
        "Encounter": [f"{prefix}0-e", f"{prefix}1-e"],
    }
    assert elapsed < 30, f"HAPI's $export took {elapsed:.1f} s"
    system = _lines(pull_export(hapi_recommended_url, tmp_path / "sys", types=["Patient"]))
    assert {f"{prefix}{i}" for i in range(4)} <= {r["id"] for r in system["Patient"]}


@pytest.mark.hapi
def test_stock_hapi_has_no_export(hapi_base_url: str, tmp_path: Path) -> None:
    with pytest.raises(ExportNotSupported, match="does not offer Bulk Data export"):
        pull_export(hapi_base_url, tmp_path)
    out = fhircare("population", "export", "--source", hapi_base_url, "--out", str(tmp_path))
    assert out.returncode == 1
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "does not offer Bulk Data export" in out.stderr
