"""`fhircare terminology load-rxnorm`: an RxNorm release read into a local index that
reconciliation consults before the built-in drug table (tested on a release the project
writes itself, tests/unit/data/rxnorm-rrf)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fhircare.cli import app
from fhircare.terminology.rrf import Release, RrfError
from fhircare.terminology.rxnorm import RxNormIndex, build_index, index_path, open_local_index
from fhircare.transitions.medications import (
    RXNORM,
    identify_concept,
    local_index,
    parse_name,
    use_local_index,
)
from tests.unit.test_medrec import issues, item, mr, ms, run, sig

RELEASE = Path(__file__).parent / "data" / "rxnorm-rrf"


@pytest.fixture
def index(tmp_path: Path) -> Iterator[RxNormIndex]:
    target = tmp_path / "rxnorm.sqlite"
    build_index(Release.find(RELEASE), target)
    idx = RxNormIndex(target)
    yield idx
    idx.close()


@pytest.fixture
def active(index: RxNormIndex) -> Iterator[RxNormIndex]:
    use_local_index(index)
    yield index
    use_local_index(None)


def coded(code: str) -> dict:
    return {"coding": [{"system": RXNORM, "code": code}]}


def test_cli_loads_a_release_into_the_data_folder_and_reports_it(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["terminology", "load-rxnorm", str(RELEASE), "--data", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "2 IN, 1 PIN, 2 BN, 2 SCD, 2 SBD" in res.output
    assert index_path(tmp_path).is_file()
    assert not index_path(tmp_path).with_name("rxnorm.sqlite.tmp").exists()
    status = runner.invoke(app, ["terminology", "status", "--data", str(tmp_path)])
    assert status.exit_code == 0 and "2 SCD" in status.output


def test_index_reads_ingredients_strengths_forms_brands_and_salts(index: RxNormIndex) -> None:
    scd = index.concept("314285")
    assert scd is not None and scd.tty == "SCD" and scd.dose_form == "Oral Capsule"
    assert [(c.rxcui, c.name, c.strength) for c in scd.ingredients] == [
        ("39998", "zonisamide", "100 MG")
    ]
    sbd = index.concept("284408")
    assert sbd is not None and sbd.ingredients == scd.ingredients
    bn = index.concept("261708")
    assert bn is not None and bn.name == "Zonegran"  # the obsolete atom's name is not used
    assert [c.rxcui for c in bn.ingredients] == ["39998"]
    levo = index.concept("966224")
    assert levo is not None and levo.ingredients[0].precise == "levothyroxine sodium"
    assert index.concept("FIXTURE-DF-1").ingredients == ()  # a dose form has no ingredients
    assert index.concept("123") is None
    names = {n for n, _, _ in index.names()}
    assert "zonisamida" not in names  # the Spanish row is skipped


def test_reconciliation_uses_the_index_before_the_built_in_table(active: RxNormIndex) -> None:
    ident = identify_concept(coded("284408"))
    assert ident.ingredients == ("zonisamide",) and ident.source == "rxnorm-index"
    assert ident.strength == (("zonisamide", 100.0, "mg"),) and ident.form == "capsule"
    assert parse_name("Zonegran 100 mg capsule").ingredients == ("zonisamide",)
    levo = identify_concept(coded("966224"))
    assert levo.salt == "sodium" and levo.strength == (("levothyroxine", 0.125, "mg"),)
    res = run(
        ms("pre", "", sig(1, "capsule", freq=1), concept=coded("284408")),
        mr("post", "zonisamide 100 MG Oral Capsule", sig(100, freq=1)),
    )
    it = item(res, "zonisamide")
    assert it.status == "continued" and it.rxnorm == ["39998"]
    assert res.issues == []


def test_a_drug_only_the_index_knows_is_not_dropped_silently(active: RxNormIndex) -> None:
    res = run(
        ms("pre", "Zonegran 100 mg capsule", sig(100, freq=1)),
        ms("pre2", "lisinopril 10 MG Oral Tablet", sig(10, freq=1)),
        mr("post", "lisinopril 10 MG Oral Tablet", sig(10, freq=1)),
    )
    [omission] = issues(res, "omission")
    assert "zonisamide" in omission.detail and "chronic is unknown" in omission.detail


def test_without_the_index_the_same_drug_is_unmatched() -> None:
    assert local_index() is None
    res = run(
        ms("pre", "Zonegran 100 mg capsule", sig(100, freq=1)),
        mr("post", "Zonegran 100 mg capsule", sig(100, freq=1)),
    )
    assert [i.type for i in res.issues] == ["unmatched"]


def test_malformed_or_missing_release_is_one_line_exit_2_and_nothing_written(
    tmp_path: Path,
) -> None:
    broken = tmp_path / "release"
    shutil.copytree(RELEASE, broken)
    rel = broken / "rrf" / "RXNREL.RRF"
    rel.write_text(rel.read_text(encoding="utf-8") + "1|2|3|\n", encoding="utf-8")
    runner = CliRunner()
    res = runner.invoke(app, ["terminology", "load-rxnorm", str(broken), "--data", str(tmp_path)])
    assert res.exit_code == 2
    assert "RXNREL.RRF line 31: 4 fields, expected 16" in res.output
    assert not (tmp_path / "terminology").exists() or not any((tmp_path / "terminology").iterdir())
    (broken / "rrf" / "RXNSAT.RRF").unlink()
    res = runner.invoke(app, ["terminology", "load-rxnorm", str(broken), "--data", str(tmp_path)])
    assert res.exit_code == 2 and "no RXNSAT.RRF" in res.output
    with pytest.raises(RrfError, match="not a folder"):
        Release.find(tmp_path / "nowhere")


def test_a_damaged_index_is_refused_with_a_message(tmp_path: Path) -> None:
    path = index_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(ValueError, match="load it again"):
        open_local_index(tmp_path)
    assert open_local_index(tmp_path / "empty") is None
