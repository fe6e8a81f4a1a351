"""The drug table: coverage of the most prescribed US drugs, codes with sources, no guesses."""

from __future__ import annotations

from pathlib import Path

import pytest

from fhircare.paths import mappings_dir
from fhircare.transitions.medications import (
    RXNORM,
    _read_yaml,
    identify_concept,
    load_tables,
    parse_name,
)

CHECKLIST = Path(__file__).parent / "data" / "top300-checklist.txt"
SOURCES = {"rx25", "vsac", "cpic", "table", "ohdsi", "rxnav15", "cdc"}
# Ingredients of the checklist whose RxNorm code is in none of the cited sources: identified by
# name, never given a code. Every checklist ingredient now has a cited code; a name added here
# must have `rxcui: null` in mappings/drug-codes.yaml.
NO_CODE: frozenset[str] = frozenset()


def _checklist() -> list[tuple[str, ...]]:
    lines = CHECKLIST.read_text(encoding="utf-8").splitlines()
    return [
        tuple(p.strip() for p in line.split(" / "))
        for line in lines
        if line.strip() and not line.startswith("#")
    ]


def test_checklist_has_the_top_300() -> None:
    assert len(_checklist()) >= 300


@pytest.mark.parametrize("drug", _checklist(), ids=" / ".join)
def test_every_checklist_drug_is_identified_by_its_ingredients(drug: tuple[str, ...]) -> None:
    ident = parse_name(" / ".join(drug))
    assert ident.key == frozenset(drug)
    t = load_tables()
    for name in drug:
        ing = t.ingredients[name]
        assert (ing.rxcui is None) == (name in NO_CODE), name


def test_every_code_names_a_source_and_codes_are_unique() -> None:
    path = mappings_dir() / "drug-codes.yaml"
    codes = _read_yaml(path)
    header = path.read_text(encoding="utf-8").split("\ningredients:", 1)[0]
    for key in SOURCES:  # each source key is described in the file's header
        assert f"#   {key} " in header, key
    seen: dict[str, str] = {}
    for name, v in codes["ingredients"].items():
        if v["rxcui"] is None:
            assert v["src"] == [], name
            continue
        assert v["src"] and set(v["src"]) <= SOURCES, name
        assert v["rxcui"] not in seen, (name, seen.get(v["rxcui"]))
        seen[v["rxcui"]] = name
    for name, v in codes["brands"].items():
        assert v["src"] in SOURCES, name
        assert v["src"] != "rx25" or v.get("rxcui"), name
    for group in ("salts", "brands"):
        for name, v in codes[group].items():
            code = v.get("rxcui")
            assert code is None or code not in seen, (name, seen.get(code))


def test_levothyroxine_and_bisoprolol_brands_and_salts() -> None:
    for text in ("Synthroid 50 mcg tablet", "Levoxyl 0.05 MG", "levothyroxine sodium 50 mcg"):
        assert parse_name(text).ingredients == ("levothyroxine",), text
    assert parse_name("bisoprolol fumarate 5 mg").ingredients == ("bisoprolol",)
    assert parse_name("Ziac 5/6.25").key == {"bisoprolol", "hydrochlorothiazide"}
    assert parse_name("Zebeta 5 mg").ingredients == ()  # no cited source: unknown, not guessed


def test_brands_and_names_of_the_a_ingredients() -> None:
    xanax = parse_name("Xanax 0.5 mg tablet")
    assert xanax.ingredients == ("alprazolam",)
    assert xanax.strength == (("alprazolam", 0.5, "mg"),) and xanax.form == "tablet"
    assert parse_name("Zithromax 250 mg").ingredients == ("azithromycin",)
    assert parse_name("Fosamax 70 mg weekly").ingredients == ("alendronate",)
    # the longer brand wins: Fosamax Plus D is not plain alendronate
    assert parse_name("Fosamax Plus D 70/5600").key == {"alendronate", "cholecalciferol"}
    assert parse_name("alendronic acid 70 MG Oral Tablet").ingredients == ("alendronate",)
    assert parse_name("ProAir HFA 90 mcg").ingredients == ("albuterol",)
    assert parse_name("Amoxil 500 mg").ingredients == ()  # no cited source: unknown, not guessed


def test_codes_identify_ingredients_brands_salts_and_products() -> None:
    def by_code(code: str) -> tuple[str, ...]:
        return identify_concept({"coding": [{"system": RXNORM, "code": code}]}).ingredients

    assert by_code("10582") == ("levothyroxine",)  # IN
    assert by_code("224920") == ("levothyroxine",)  # BN Synthroid
    salt = identify_concept({"coding": [{"system": RXNORM, "code": "40144"}]})  # PIN
    assert (salt.ingredients, salt.salt) == (("levothyroxine",), "sodium")
    product = identify_concept({"coding": [{"system": RXNORM, "code": "966224"}]})  # SCD
    assert product.ingredients == ("levothyroxine",)
    assert product.strength == (("levothyroxine", 0.125, "mg"),) and product.form == "tablet"
    assert by_code("966247") == ("levothyroxine",)  # SBD: 0.05 MG Oral Tablet [Synthroid]
    assert by_code("999999999") == ()  # an unknown code is not guessed
    # the "a" ingredients (ohdsi, rxnav15), a BN (rxnav15) and the cdc / ohdsi products
    assert by_code("723") == ("amoxicillin",)
    assert by_code("596") == ("alprazolam",)
    assert by_code("703") == ("amiodarone",)
    assert by_code("202908") == ("albuterol",)  # BN Proventil
    xanax = identify_concept({"coding": [{"system": RXNORM, "code": "687025"}]})
    assert xanax.ingredients == ("alprazolam",) and xanax.release == "extended"
    assert xanax.strength == (("alprazolam", 0.5, "mg"),)
    fosamax = identify_concept({"coding": [{"system": RXNORM, "code": "904433"}]})
    assert fosamax.strength == (("alendronate", 70.0, "mg"),) and fosamax.form == "tablet"


def test_no_phrase_means_two_drugs_and_files_agree(tmp_path: Path) -> None:
    rules = (mappings_dir() / "medications.yaml").read_text(encoding="utf-8")
    codes = (mappings_dir() / "drug-codes.yaml").read_text(encoding="utf-8")
    (tmp_path / "medications.yaml").write_text(
        rules.replace(
            "ingredients:\n", "ingredients:\n  madeupzine: {classes: [], chronic: true}\n", 1
        ),
        encoding="utf-8",
    )
    (tmp_path / "drug-codes.yaml").write_text(codes, encoding="utf-8")
    with pytest.raises(ValueError, match="madeupzine"):
        load_tables(str(tmp_path / "medications.yaml"))
    (tmp_path / "medications.yaml").write_text(rules, encoding="utf-8")
    (tmp_path / "drug-codes.yaml").write_text(
        codes.replace(
            "brands:\n", 'brands:\n  "warfarin": {ingredients: [apixaban], src: table}\n', 1
        ),
        encoding="utf-8",
    )
    with pytest.raises(ValueError, match="means both"):
        load_tables(str(tmp_path / "medications.yaml"))
