"""Medication identification: what a medication resource is and how it is taken.

Identity (ingredient set, strength, dose form, release, salt) comes from RxNorm codes and from
names parsed against `mappings/medications.yaml` by exact phrase lookup: a name the table does
not know stays unidentified (never matched by string similarity). Dosage (dose, frequency, PRN,
route) comes from FHIR Dosage, falling back to its free text.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import yaml

from fhircare.paths import mappings_dir

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
SNOMED = "http://snomed.info/sct"

Resource = dict[str, Any]
Resolver = Callable[[str], Resource | None]


# --------------------------------------------------------------------------- reference tables


@dataclass(frozen=True, slots=True)
class Ingredient:
    """One active ingredient from the reference table."""

    name: str
    rxcui: str | None
    classes: tuple[str, ...]
    chronic: bool
    high_alert: bool
    known: bool = True  # False: identified through a local RxNorm index, no clinical facts


@dataclass(frozen=True, slots=True)
class Phrase:
    """A known phrase in a medication name: an ingredient, salt, brand, form or release marker."""

    kind: str  # ingredient | salt | brand | form | release
    ingredients: tuple[str, ...] = ()
    salt: str | None = None
    release: str | None = None
    form: str | None = None
    route: str | None = None


@dataclass(frozen=True, slots=True)
class Tables:
    """The parsed reference tables (mappings/medications.yaml and mappings/drug-codes.yaml)."""

    ingredients: dict[str, Ingredient]
    by_rxcui: dict[str, str]  # ingredient (IN) code -> ingredient
    by_code: dict[str, Phrase]  # precise ingredient (PIN) and brand name (BN) code -> phrase
    phrases: dict[str, Phrase]
    max_words: int
    products: dict[str, str]
    salt_words: frozenset[str]
    classes: dict[str, dict[str, Any]]
    duplicate_groups: tuple[dict[str, Any], ...]
    interactions: tuple[dict[str, Any], ...]
    interaction_classes: frozenset[str]  # every class some interaction rule names
    high_alert: dict[str, str]
    combo_order: dict[frozenset[str], tuple[str, ...]]
    routes_snomed: dict[str, str]
    route_words: dict[str, str]
    timing_codes: dict[str, float]


CODES_FILE = "drug-codes.yaml"


def mappings_path() -> Path:
    """Where medications.yaml lives (fhircare.paths: $FHIRCARE_MAPPINGS or the package's)."""
    return mappings_dir() / "medications.yaml"


def _words(text: str) -> str:
    return " ".join(_WORD_RE.findall(text.lower()))


def _read_yaml(path: Path) -> dict[str, Any]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: 10x faster
    data = yaml.load(path.read_text(encoding="utf-8"), Loader=loader)  # noqa: S506 - safe loader
    return data if isinstance(data, dict) else {}


@lru_cache(maxsize=4)
def load_tables(path: str | None = None) -> Tables:
    """The reference tables: the built-in ones, extended by the local RxNorm index in use.

    `path` names another medications.yaml (then no local index applies). Memoised (a hot
    path); use_local_index clears it.
    """
    local = _LOCAL
    if path is None and local is not None:
        return local.tables
    return _load_tables(path)


@lru_cache(maxsize=4)
def _load_tables(path: str | None = None) -> Tables:
    """Load and index the reference tables once (cached per path of medications.yaml).

    drug-codes.yaml is read from the same folder. Both must name the same ingredients, and no
    phrase may mean two different things.
    """
    rules_path = Path(path or mappings_path())
    raw = _read_yaml(rules_path)
    codes_path = rules_path.with_name(CODES_FILE)
    codes = _read_yaml(codes_path) if codes_path.exists() else {}
    high_alert = {cls: v["basis"] for cls, v in (raw.get("high_alert") or {}).items()}
    coded = codes.get("ingredients") or {}
    if coded and set(coded) != set(raw["ingredients"]):
        diff = sorted(set(coded) ^ set(raw["ingredients"]))
        raise ValueError(f"{CODES_FILE} and medications.yaml name different ingredients: {diff}")
    ingredients: dict[str, Ingredient] = {}
    for name, v in raw["ingredients"].items():
        classes = tuple(v.get("classes") or ())
        rxcui = (coded.get(name) or {}).get("rxcui", v.get("rxcui"))
        ingredients[name] = Ingredient(
            name=name,
            rxcui=str(rxcui) if rxcui is not None else None,
            classes=classes,
            chronic=bool(v.get("chronic")),
            high_alert=any(c in high_alert for c in classes),
        )
    phrases: dict[str, Phrase] = {}

    def add(text: str, phrase: Phrase) -> None:
        key = _words(text)
        known = phrases.get(key)
        if known is not None and known.ingredients and known.ingredients != phrase.ingredients:
            raise ValueError(f"medication phrase {key!r} means both {known} and {phrase}")
        phrases[key] = phrase

    for name in ingredients:
        add(name, Phrase("ingredient", (name,)))
    for section in (codes, raw):
        for syn, target in (section.get("synonyms") or {}).items():
            add(syn, Phrase("ingredient", (target,)))
    salts = {**(codes.get("salts") or {})}
    for name, v in (raw.get("salts") or {}).items():  # the clinical file adds release facts
        salts[name] = {**salts.get(name, {}), **v}
    by_code: dict[str, Phrase] = {}
    for name, v in salts.items():
        phrase = Phrase("salt", (v["ingredient"],), salt=v.get("salt"), release=v.get("release"))
        add(name, phrase)
        if v.get("rxcui"):
            by_code[str(v["rxcui"])] = phrase
    for name, v in (codes.get("brands") or {}).items():
        phrase = Phrase(
            "brand", tuple(v["ingredients"]), salt=v.get("salt"), release=v.get("release")
        )
        add(name, phrase)
        if v.get("rxcui"):
            by_code[str(v["rxcui"])] = phrase
    for name, v in (raw.get("forms") or {}).items():
        add(name, Phrase("form", form=v["form"], release=v.get("release"), route=v.get("route")))
    for name, rel in (raw.get("release_markers") or {}).items():
        add(name, Phrase("release", release=rel))
    for phrase in phrases.values():
        for ing in phrase.ingredients:
            if ing not in ingredients:
                raise ValueError(f"medications.yaml: unknown ingredient {ing!r}")
    products: dict[str, str] = {}
    code_sections = [v for k, v in codes.items() if k.endswith("_products")]  # one per source
    for section in (*code_sections, raw.get("products")):
        products.update({str(k): v for k, v in (section or {}).items()})
    routes = raw.get("routes") or {}
    return Tables(
        ingredients=ingredients,
        by_rxcui={i.rxcui: n for n, i in ingredients.items() if i.rxcui},
        by_code=by_code,
        phrases=phrases,
        max_words=max(len(p.split()) for p in phrases),
        products=products,
        salt_words=frozenset(raw.get("salt_words") or ()),
        classes=raw.get("classes") or {},
        duplicate_groups=tuple(raw.get("duplicate_groups") or ()),
        interactions=tuple(raw.get("interactions") or ()),
        interaction_classes=frozenset(
            c for rule in raw.get("interactions") or () for c in rule["classes"]
        ),
        high_alert=high_alert,
        combo_order={frozenset(c): tuple(c) for c in raw.get("combinations") or ()},
        routes_snomed={str(k): v for k, v in (routes.get("snomed") or {}).items()},
        route_words={_words(k): v for k, v in (routes.get("words") or {}).items()},
        timing_codes={k.upper(): float(v) for k, v in (raw.get("timing_codes") or {}).items()},
    )


# --------------------------------------------------------------------------- identity


@dataclass(frozen=True, slots=True)
class Identity:
    """What a medication is, independent of how it is taken."""

    ingredients: tuple[str, ...]  # display order
    strength: tuple[tuple[str, float, str], ...] = ()  # (ingredient, amount, unit) sorted
    form: str | None = None
    release: str | None = None
    salt: str | None = None
    route: str | None = None  # implied by the dose form
    source: str = "text"  # rxnorm-product | rxnorm-ingredient | rxnorm-brand | text | medication
    # A strength written without units ("Norco 5/325", "Advair 250/50", "lisinopril 10"): kept
    # as written and never assumed to be mg; reconciliation flags it for review.
    unitless: str | None = None

    @property
    def key(self) -> frozenset[str]:
        return frozenset(self.ingredients)


UNIDENTIFIED = Identity(ingredients=())

_WORD_RE = re.compile(r"[a-z]+(?:-[a-z]+)*|\d+(?:\.\d+)?")
_TOKEN_RE = re.compile(r"[a-z]+(?:-[a-z]+)*|\d+(?:\.\d+)?")
_STRENGTH_RE = re.compile(
    r"(?<![\d.])(\d+(?:\.\d+)?)\s*(mg|mcg|ug|µg|g|gm|unt|units?|iu|meq|ml|%)"
    r"(?:\s*/\s*(ml|actuat|hr|h|g))?(?![a-z])"
)
_PAIR_RE = re.compile(
    r"(?<![\d.])(\d+(?:\.\d+)?)\s*[/-]\s*(\d+(?:\.\d+)?)(?:\s*(mg|mcg|ug|µg|g)\b)?(?![\d.a-z/])"
)
# A number in a name with no unit after it (not a release period such as "24 hr").
_BARE_NUMBER_RE = re.compile(
    r"(?<![\d./])(\d+(?:\.\d+)?)(?![\d./])"
    r"(?!\s*(?:hr|hrs|h|hour|hours|ml|mg|mcg|ug|µg|g|gm|unt|units?|iu|meq|%|actuat|day|days|d)\b)"
)
_BRACKET_RE = re.compile(r"\[([^\]]+)\]")
_MASS = {"mg": 1.0, "g": 1000.0, "gm": 1000.0, "mcg": 0.001, "ug": 0.001, "µg": 0.001}
_UNITS = {"unt": "unit", "unit": "unit", "units": "unit", "iu": "unit", "meq": "meq", "%": "%"}


def _norm_strength(value: float, unit: str, per: str | None) -> tuple[float, str]:
    if unit in _MASS:
        value, base = value * _MASS[unit], "mg"
    elif unit == "ml":
        base = "ml"
    else:
        base = _UNITS.get(unit, unit)
    if per:
        base = f"{base}/{'ml' if per == 'ml' else per}"
    return round(value, 6), base


@lru_cache(maxsize=8192)
def parse_name(text: str) -> Identity:
    """Identify a medication from a product name or free text (exact phrase lookup only)."""
    t = load_tables()
    low = text.lower()
    tokens = [(m.group(), m.start()) for m in _TOKEN_RE.finditer(low)]
    mentions: list[tuple[int, tuple[str, ...], Phrase]] = []
    form = release = route = salt = None
    i = 0
    while i < len(tokens):
        for n in range(min(t.max_words, len(tokens) - i), 0, -1):
            phrase = t.phrases.get(" ".join(tok for tok, _ in tokens[i : i + n]))
            if phrase is None:
                continue
            if phrase.kind == "form":
                form = form or phrase.form
                release = release or phrase.release
                route = route or phrase.route
            elif phrase.kind == "release":
                release = release or phrase.release
            else:
                mentions.append((tokens[i][1], phrase.ingredients, phrase))
                release = release or phrase.release
                salt = salt or phrase.salt
                nxt = i + n
                if phrase.kind == "ingredient" and nxt < len(tokens):
                    word = tokens[nxt][0]
                    if word in t.salt_words:
                        salt = salt or ("hydrochloride" if word == "hcl" else word)
            i += n
            break
        else:
            i += 1
    if not mentions:
        return UNIDENTIFIED
    names: list[str] = []
    for _, ings, _ in mentions:
        names.extend(x for x in ings if x not in names)
    strength: dict[str, tuple[float, str]] = {}
    pair = _PAIR_RE.search(low) if len(names) == 2 else None
    unitless = None
    if pair and pair.group(3):  # "hydrocodone/APAP 10-325 mg": in the product's ingredient order
        for ing, val in zip(names, (pair.group(1), pair.group(2)), strict=True):
            strength[ing] = _norm_strength(float(val), pair.group(3), None)
    elif pair:  # "Norco 5/325", "Advair 250/50": units unknown (mg? mcg?), never assumed
        unitless = pair.group(0).strip()
    mention_ings = [(pos, ings) for pos, ings, p in mentions if p.kind != "brand"]
    found = [] if pair else list(_STRENGTH_RE.finditer(low))
    if len(names) > 1 and len(found) < len(names):
        found = []  # "amphetamine / dextroamphetamine 20 mg": a total, not one ingredient's
    for m in found:
        value, unit = _norm_strength(float(m.group(1)), m.group(2), m.group(3))
        before = [ings for pos, ings in mention_ings if pos < m.start()]
        if before:
            target = before[-1][0]
        elif unit == "ml":
            continue  # a package volume ("10 ML Furosemide 10 MG/ML Injection")
        elif len(names) == 1:
            target = names[0]
        else:
            continue
        strength.setdefault(target, (value, unit))
    if not strength and unitless is None:
        after = mentions[0][0]  # a bare number after the drug's name: "lisinopril 10"
        bare = next((m for m in _BARE_NUMBER_RE.finditer(low) if m.start() > after), None)
        if bare is not None:
            unitless = bare.group(1)
    order = t.combo_order.get(frozenset(names))
    ordered = order if order else tuple(sorted(names)) if len(names) > 1 else tuple(names)
    return Identity(
        ingredients=ordered,
        strength=tuple(sorted((k, v, u) for k, (v, u) in strength.items())),
        form=form,
        release=release,
        salt=salt,
        route=route,
        unitless=unitless,
    )


def coding_key(concept: Resource | None) -> tuple[Any, ...]:
    """A hashable key of a CodeableConcept's codings and text (the cache key of identify_key)."""
    if not concept:
        return ()
    coding = concept.get("coding")
    codings = (
        tuple([(c.get("system"), c.get("code"), c.get("display")) for c in coding])
        if coding
        else ()
    )
    return (codings, concept.get("text"))


@lru_cache(maxsize=8192)
def identify_key(key: tuple[Any, ...]) -> Identity:
    """Identify a concept from its coding_key (memoised: concepts recur across patients)."""
    if not key:
        return UNIDENTIFIED
    t = load_tables()
    codings, text = key
    texts = [d for s, c, d in codings if s == RXNORM and d] + [
        d for s, c, d in codings if s != RXNORM and d
    ]
    if text:
        texts.append(text)
    parsed = [p for p in (parse_name(x) for x in texts) if p.ingredients]
    local = _LOCAL
    for system, code, _ in codings:
        if system != RXNORM or not code:
            continue
        if local is not None:  # the user's RxNorm release first, then the built-in table
            found = local.identify(code)
            if found is not None:
                extra = next((p for p in parsed if p.key == found.key), None)
                return _merge(found, extra, "rxnorm-index")
        if code in t.products:
            ident = parse_name(t.products[code])
            extra = next((p for p in parsed if p.key == ident.key), None)
            return _merge(ident, extra, "rxnorm-product")
        if code in t.by_rxcui:
            ing = t.by_rxcui[code]
            extra = next((p for p in parsed if p.key == {ing}), None)
            return _merge(Identity(ingredients=(ing,)), extra, "rxnorm-ingredient")
        phrase = t.by_code.get(code)  # a precise ingredient (PIN) or brand name (BN) code
        if phrase is not None:
            names = phrase.ingredients
            ordered = t.combo_order.get(frozenset(names)) or tuple(sorted(names))
            base = Identity(ordered, salt=phrase.salt, release=phrase.release)
            extra = next((p for p in parsed if p.key == base.key), None)
            kind = "rxnorm-ingredient" if phrase.kind == "salt" else "rxnorm-brand"
            return _merge(base, extra, kind)
    return parsed[0] if parsed else UNIDENTIFIED


def _merge(base: Identity, extra: Identity | None, source: str) -> Identity:
    if extra is None:
        return Identity(
            base.ingredients,
            base.strength,
            base.form,
            base.release,
            base.salt,
            base.route,
            source,
            base.unitless,
        )
    strength = base.strength or extra.strength
    return Identity(
        ingredients=base.ingredients,
        strength=strength,
        form=base.form or extra.form,
        release=base.release or extra.release,
        salt=base.salt or extra.salt,
        route=base.route or extra.route,
        source=source,
        unitless=None if strength else base.unitless or extra.unitless,
    )


def identify_concept(concept: Resource | None) -> Identity:
    """Identify a CodeableConcept (RxNorm product/ingredient code first, then names)."""
    return identify_key(coding_key(concept))


def identify_medication(med: Resource) -> Identity:
    """Identify a Medication resource: its code, else its ingredient list; plus its form."""
    ident = identify_concept(med.get("code"))
    if not ident.ingredients:
        names: list[str] = []
        strength: list[tuple[str, float, str]] = []
        for ing in med.get("ingredient") or ():
            sub = identify_concept(ing.get("itemCodeableConcept"))
            names.extend(x for x in sub.ingredients if x not in names)
            num = ((ing.get("strength") or {}).get("numerator")) or {}
            if len(sub.ingredients) == 1 and num.get("value") is not None:
                unit = str(num.get("code") or num.get("unit") or "").lower()
                den = ((ing.get("strength") or {}).get("denominator")) or {}
                per = str(den.get("code") or den.get("unit") or "").lower() or None
                per = None if per in (None, "1", "{tbl}", "tablet", "{tablet}", "capsule") else per
                value, base = _norm_strength(float(num["value"]), unit, per)
                strength.append((sub.ingredients[0], value, base))
        if not names:
            return UNIDENTIFIED
        order = load_tables().combo_order.get(frozenset(names))
        ident = Identity(
            ingredients=order or tuple(sorted(names)),
            strength=tuple(sorted(strength)),
            source="medication",
        )
    form_cc = med.get("form")
    if form_cc and not ident.form:
        texts = [c.get("display") for c in form_cc.get("coding") or ()] + [form_cc.get("text")]
        for x in texts:
            if x:
                f = parse_form(x)
                if f:
                    ident = Identity(
                        ident.ingredients,
                        ident.strength,
                        f[0],
                        ident.release or f[1],
                        ident.salt,
                        ident.route or f[2],
                        ident.source,
                        ident.unitless,
                    )
                    break
    return ident


@lru_cache(maxsize=1024)
def parse_form(text: str) -> tuple[str, str | None, str | None] | None:
    """(form, release, implied route) for a dose-form text, or None."""
    t = load_tables()
    words = _words(text).split()
    for n in range(len(words), 0, -1):
        for i in range(len(words) - n + 1):
            p = t.phrases.get(" ".join(words[i : i + n]))
            if p is not None and p.kind == "form":
                return p.form or "", p.release, p.route
    return None


# --------------------------------------------------------------------------- dosage


@dataclass(frozen=True, slots=True)
class Dose:
    """How much is given per administration, normalised (mg, unit, ml, count...)."""

    value: float
    unit: str


@dataclass(frozen=True, slots=True)
class Sig:
    """How a medication is taken: dose, administrations per day, PRN, route."""

    dose: Dose | None = None
    per_day: float | None = None
    prn: bool = False
    route: str | None = None
    text: str | None = None
    # Why this sig cannot be compared exactly (several dosages, ranges, fractions, weekly
    # days, course limits...): reconciliation then flags the pair for review, never
    # calls it unchanged.
    complex: str | None = None


def _slot_setters(cls: type, names: tuple[str, ...]) -> tuple[Callable[[Any, Any], None], ...]:
    return tuple(getattr(cls, n).__set__ for n in names)


_new_object = object.__new__
_DOSE_SET = _slot_setters(Dose, ("value", "unit"))
_SIG_SET = _slot_setters(Sig, ("dose", "per_day", "prn", "route", "text", "complex"))


def _new_dose(value: float, unit: str) -> Dose:
    """Dose(value, unit) without the frozen-dataclass per-field setattr (hot path)."""
    d = _new_object(Dose)
    _DOSE_SET[0](d, value)
    _DOSE_SET[1](d, unit)
    return d


def _new_sig(
    dose: Dose | None,
    per_day: float | None,
    prn: bool,
    route: str | None,
    text: str | None,
    complex: str | None = None,
) -> Sig:
    """Sig(...) without the frozen-dataclass per-field setattr (hot path)."""
    s = _new_object(Sig)
    set_dose, set_per_day, set_prn, set_route, set_text, set_complex = _SIG_SET
    set_dose(s, dose)
    set_per_day(s, per_day)
    set_prn(s, prn)
    set_route(s, route)
    set_text(s, text)
    set_complex(s, complex)
    return s


_MEMO_MAX = 4096  # bound of the small string memo tables below
_UNIT_NORM: dict[str, tuple[str, tuple[str, float] | None]] = {}
_DOSE_MEMO: dict[tuple[float, str], Dose] = {}


_DOSE_UNITS = {
    "mg": ("mg", 1.0),
    "g": ("mg", 1000.0),
    "gm": ("mg", 1000.0),
    "mcg": ("mg", 0.001),
    "ug": ("mg", 0.001),
    "µg": ("mg", 0.001),
    "u": ("unit", 1.0),
    "unit": ("unit", 1.0),
    "units": ("unit", 1.0),
    "[iu]": ("unit", 1.0),
    "iu": ("unit", 1.0),
    "[u]": ("unit", 1.0),
    "unt": ("unit", 1.0),
    "ml": ("ml", 1.0),
    "l": ("ml", 1000.0),
    "meq": ("meq", 1.0),
    "tab": ("count", 1.0),
    "tabs": ("count", 1.0),
    "tablet": ("count", 1.0),
    "tablets": ("count", 1.0),
    "{tbl}": ("count", 1.0),
    "{tablet}": ("count", 1.0),
    "{tablets}": ("count", 1.0),
    "cap": ("count", 1.0),
    "caps": ("count", 1.0),
    "capsule": ("count", 1.0),
    "capsules": ("count", 1.0),
    "{capsule}": ("count", 1.0),
    "{cap}": ("count", 1.0),
    "1": ("count", 1.0),
    "{each}": ("count", 1.0),
    "each": ("count", 1.0),
    "ea": ("count", 1.0),
    "patch": ("count", 1.0),
    "{patch}": ("count", 1.0),
    "puff": ("puff", 1.0),
    "puffs": ("puff", 1.0),
    "{puff}": ("puff", 1.0),
    "actuat": ("puff", 1.0),
    "{actuat}": ("puff", 1.0),
    "{actuation}": ("puff", 1.0),
}
_PERIOD_DAYS = {"s": 1 / 86400, "min": 1 / 1440, "h": 1 / 24, "d": 1.0, "wk": 7.0, "mo": 30.4375}
_PERIOD_DAYS["a"] = 365.25

_FREQ_TEXT: tuple[tuple[re.Pattern[str], float | None], ...] = tuple(
    (re.compile(p), v)
    for p, v in (
        (r"\bevery other day\b|\bqod\b|\bq\.o\.d\b|\balternate days\b", 0.5),
        (r"\b(?:four times|4 times|4x)\b|\bqid\b|\bq\.i\.d\b", 4.0),
        (r"\b(?:three times|3 times|3x)\b|\btid\b|\bt\.i\.d\b", 3.0),
        (r"\b(?:twice|two times|2 times|2x)\b|\bbid\b|\bb\.i\.d\b", 2.0),
        (r"\bweekly\b|\bonce a week\b|\bevery week\b", 1 / 7),
        (
            r"\b(?:once|one time|1 time)\b|\bdaily\b|\bevery day\b|\beach day\b|\bqd\b|\bqday\b"
            r"|\bq\.d\b|\bnightly\b|\bat bedtime\b|\bqhs\b|\bqam\b|\bqpm\b|\bevery morning\b"
            r"|\bevery evening\b|\bevery night\b|\bper day\b|\ba day\b",
            1.0,
        ),
    )
)
_EVERY_RE = re.compile(
    r"\b(?:every|q)\s*(\d+(?:\.\d+)?)\s*(?:-\s*\d+\s*)?(hours?|hrs?|h|days?|d|weeks?|wk)\b"
)
_TIMES_RE = re.compile(r"\b(\d+)\s*(?:x|times)\s*(?:a|per|/|each)?\s*(day|daily|week)\b")
_PRN_RE = re.compile(r"\bprn\b|\bas needed\b|\bif needed\b|\bwhen needed\b|\bas required\b")
_DOSE_TEXT_RE = re.compile(
    r"(?<![\d./])(\d+(?:\.\d+)?)\s*(mg|mcg|g|units?|ml|tabs?|tablets?|caps?|capsules?|puffs?)\b"
)


def _text_per_day(text: str) -> float | None:
    m = _EVERY_RE.search(text)
    if m:
        n, unit = float(m.group(1)), m.group(2)[0]
        if n > 0:
            days = {"h": n / 24, "d": n, "w": 7 * n}[unit]
            return round(1 / days, 4)
    m = _TIMES_RE.search(text)
    if m:
        return float(m.group(1)) / (7.0 if m.group(2) == "week" else 1.0)
    for rx, value in _FREQ_TEXT:
        if rx.search(text):
            return value
    return None


def _quantity_dose(q: Resource | None) -> Dose | None:
    if not q:
        return None
    value = q.get("value")
    if value is None:
        return None
    raw = q.get("code") or q.get("unit") or "1"
    tv = type(value)
    if (tv is float or tv is int) and value and type(raw) is str:
        # memo on the exact scalars (non-zero: 0.0 == -0.0 would merge two outputs)
        key = (value, raw)
        dose = _DOSE_MEMO.get(key)
        if dose is None:
            dose = _make_dose(value, raw)
            if len(_DOSE_MEMO) < _MEMO_MAX:
                _DOSE_MEMO[key] = dose
        return dose
    return _make_dose(value, raw)


def _make_dose(value: Any, raw: Any) -> Dose:
    norm = _UNIT_NORM.get(raw) if type(raw) is str else None
    if norm is None:
        unit = str(raw).strip().lower()
        norm = (unit, _DOSE_UNITS.get(unit))
        if type(raw) is str and len(_UNIT_NORM) < _MEMO_MAX:
            _UNIT_NORM[raw] = norm
    unit, base = norm
    if base is None:
        return _new_dose(float(value), unit)
    return _new_dose(round(float(value) * base[1], 6), base[0])


def _route(cc: Resource | None, t: Tables) -> str | None:
    if not cc:
        return None
    codings = cc.get("coding") or ()
    snomed = t.routes_snomed
    for c in codings:
        if c.get("system") == SNOMED and c.get("code") in snomed:
            return snomed[c["code"]]
    for x in [c.get("display") for c in codings] + [cc.get("text")]:
        if x:
            r = t.route_words.get(_words(x))
            if r:
                return r
    return None


def _text_route(text: str, t: Tables) -> str | None:
    words = text.split()
    for n in (3, 2, 1):
        for i in range(len(words) - n + 1):
            r = t.route_words.get(" ".join(words[i : i + n]))
            if r:
                return r
    return None


# Free text this parser cannot turn into one exact dose and frequency: fractions left over
# after the tablet counts below ("250/50"), ranges ("1-2 tablets", "every 4-6 hours", "1 to
# 2"), alternatives, and schedules (tapers, weekdays, courses) that only the whole-regimen
# comparison can read.
_TEXT_COMPLEX_RE = re.compile(
    r"\d\s*/\s*\d|[½¼¾⅓⅔⅛]|\d\s*(?:-|–|to|or)\s*\d|\bhalf\b|\bquarter\b"
    r"|\bthen\b|\btaper|\balternat|\bmon(?:day)?s?\b|\btues?(?:day)?s?\b|\bwed(?:nesday)?s?\b"
    r"|\bthu(?:rs?)?(?:day)?s?\b|\bfri(?:day)?s?\b|\bsat(?:urday)?s?\b|\bsun(?:day)?s?\b"
    r"|\bweekly\b|\bfor \d+ (?:days?|weeks?)\b|\bx\s*\d+\s*(?:days?|d|weeks?|wks?)\b"
    r"|\bother days\b|\bexcept\b|\brest of the week\b|\bremaining days\b"
    r"|\bas directed\b|\bper inr\b|\bas instructed\b|\bsliding scale\b|\bper protocol\b"
)

# Tablet and capsule counts written as words, Latin numerals or fractions ("one tablet",
# "i po qhs", "one-half tablet", "1 1/2 tabs"): exact counts, rewritten as numbers.
_COUNT_WORDS = {"one": 1.0, "two": 2.0, "three": 3.0, "four": 4.0, "i": 1.0, "ii": 2.0, "iii": 3.0}
_VULGAR = {"½": 0.5, "¼": 0.25, "¾": 0.75}
_COUNT_UNIT = r"(?:tabs?|tablets?|caps?|capsules?|pills?)"
_HALF_RE = re.compile(r"\b(?:one[- ]half|a half|half(?: of)?(?: an?)?)\b")
_COUNT_DOSE_RE = re.compile(
    r"(?<![\w./])(?P<q>(?:(?:\d+|one|two|three)\s+(?:and\s+)?)?(?:\d+\s*/\s*\d+|[½¼¾]"
    r"|one|two|three|four|i{1,3}))\s*(?P<u>" + _COUNT_UNIT + r")\b"
)
_ROMAN_ROUTE_RE = re.compile(r"(?<![\w./])(i{1,3})\s+(?=po\b|p\.o\.|by mouth|orally|sl\b|pr\b)")


def _count_value(q: str) -> float | None:
    total = 0.0
    for tok in q.replace(" and ", " ").split():
        if tok in _COUNT_WORDS:
            total += _COUNT_WORDS[tok]
        elif tok in _VULGAR:
            total += _VULGAR[tok]
        elif "/" in tok:
            num, _, den = tok.partition("/")
            if not (num.isdigit() and den.isdigit()) or int(den) == 0:
                return None
            total += int(num) / int(den)
        elif tok.isdigit():
            total += float(tok)
        else:
            return None
    return total if total > 0 else None


def normalise_counts(lowered: str) -> str:
    """Rewrite word, Latin and fractional tablet counts as numbers ("i po" -> "1 tab po")."""
    text = _HALF_RE.sub("1/2", lowered)

    def count(m: re.Match[str]) -> str:
        q = re.sub(r"\s*/\s*", "/", m.group("q"))
        if q.replace(".", "").isdigit():
            return m.group(0)  # already a plain number
        value = _count_value(q)
        return f"{value:g} {m.group('u')}" if value is not None else m.group(0)

    text = _COUNT_DOSE_RE.sub(count, text)
    return _ROMAN_ROUTE_RE.sub(lambda m: f"{_COUNT_WORDS[m.group(1)]:g} tab ", text)


# A sig that holds the medication now ("HOLD", "hold until seen", "do not take until ...",
# "resume after ..."), and a conditional hold parameter ("hold if SBP < 100").
_CONDITIONAL_HOLD_RE = re.compile(
    r"\bhold(?:ing)?\s+(?:if|when|for\s+(?!\d+\s*(?:days?|doses?|weeks?|wks?|hours?|hrs?)\b))"
)
_HOLD_RE = re.compile(
    r"\bhold\b|\bon hold\b|\bheld\b|\bsuspend(?:ed)?\b"
    r"|\b(?:do not|don'?t|not to) (?:take|start|resume|restart|give|use)\b"
    r"[^.;]*\b(?:until|before)\b"
    r"|\bstop (?:taking )?until\b|\bresume\b[^.;]{0,40}\b(?:on|after|when|once|in)\b"
)


@lru_cache(maxsize=2048)
def hold_instruction(text: str) -> str | None:
    """'held' when the sig text holds the drug now, 'conditional' for a hold parameter."""
    low = text.lower()
    if _CONDITIONAL_HOLD_RE.search(low):
        return "conditional"
    return "held" if _HOLD_RE.search(low) else None


@lru_cache(maxsize=8192)
def parse_sig_text(text: str) -> Sig:
    """Dose, frequency, PRN and route read from free-text instructions ("1 tab po bid")."""
    t = load_tables()
    lowered = normalise_counts(text.lower())
    low = " ".join(_WORD_OR_SIG_RE.findall(lowered))
    m = _DOSE_TEXT_RE.search(low)
    dose = _quantity_dose({"value": m.group(1), "unit": m.group(2)}) if m else None
    per_day = t.timing_codes.get(low.strip().upper()) or _text_per_day(low)
    prn = bool(_PRN_RE.search(low))
    complex_ = (
        "free-text instructions with a fraction, range or schedule"
        if (_TEXT_COMPLEX_RE.search(lowered))
        else None
    )
    return Sig(
        dose=dose, per_day=per_day, prn=prn, route=_text_route(low, t), text=text, complex=complex_
    )


_EMPTY_SIG_TEXT = Sig()
_EMPTY_SIG = Sig()  # shared: Sig is immutable


def parse_dosage(dosages: Iterable[Resource] | None, tables: Tables | None = None) -> Sig:
    """Parse the first Dosage: structured fields first, its free text fills the gaps.

    `tables` (default: `load_tables()`) lets a caller parsing many dosages pass them once.
    """
    all_dosages = dosages if isinstance(dosages, list) else list(dosages or ())
    first = all_dosages[0] if all_dosages else None
    if not first:
        return _EMPTY_SIG
    complex_ = "several dosage instructions" if len(all_dosages) > 1 else None
    t = tables or load_tables()
    get = first.get
    text = get("text")
    from_text = parse_sig_text(text) if text else _EMPTY_SIG_TEXT
    dose = None
    for dr in get("doseAndRate") or ():
        q = dr.get("doseQuantity")
        dose = None
        if q:  # _quantity_dose's memo hit, inline; any other case goes through it
            value = q.get("value")
            if value is not None:
                raw = q.get("code") or q.get("unit") or "1"
                tv = type(value)
                if (tv is float or tv is int) and value and type(raw) is str:
                    dose = _DOSE_MEMO.get((value, raw))
                if dose is None:
                    dose = _quantity_dose(q)
        if dose is None and dr.get("doseRange"):
            dose = _quantity_dose(dr["doseRange"].get("high"))
            complex_ = complex_ or "a dose range"
        if dose:
            break
    per_day = None
    timing = get("timing")
    if timing:
        rep = timing.get("repeat")
        if rep:  # an empty repeat says nothing: skip its lookups
            if complex_ is None and not _TIMING_NOT_COMPARED_SET.isdisjoint(rep):
                complex_ = "timing with " + ", ".join(k for k in _TIMING_NOT_COMPARED if k in rep)
            if rep.get("period") or rep.get("frequency"):
                freq = float(rep.get("frequency") or 1)
                unit_days = _PERIOD_DAYS.get(rep.get("periodUnit") or "d", 1.0)
                period = float(rep.get("period") or 1) * unit_days
                if period > 0:
                    per_day = round(freq / period, 4)
            elif rep.get("when") or rep.get("timeOfDay"):
                per_day = float(len(rep.get("when") or rep.get("timeOfDay")))
        code = timing.get("code")
        if per_day is None and code:
            codes = t.timing_codes
            for c in code.get("coding") or ():
                raw = c.get("code", "")
                per_day = codes.get(raw.upper() if type(raw) is str else str(raw).upper())
                if per_day is not None:
                    break
            if per_day is None and code.get("text"):
                per_day = parse_sig_text(code["text"]).per_day
    prn = bool(get("asNeededBoolean")) or "asNeededCodeableConcept" in first
    route = None
    route_cc = get("route")
    if route_cc:
        coding = route_cc.get("coding")
        if type(coding) is list and len(coding) == 1:  # the usual single coding, else _route
            c = coding[0]
            if c.get("system") == SNOMED:
                route = t.routes_snomed.get(c.get("code"))
        if route is None:
            route = _route(route_cc, t)
    dose = dose or from_text.dose
    if per_day is None:
        per_day = from_text.per_day
    prn = prn or from_text.prn
    route = route or from_text.route
    complex_ = complex_ or from_text.complex
    # Sigs recur across patients and are immutable: share one per distinct content. Keyed on
    # scalars only, and never on a zero (0.0 == -0.0 would merge two outputs).
    if (text is None or type(text) is str) and per_day != 0:
        if dose is None:
            key: tuple[Any, ...] = (None, None, per_day, prn, route, text, complex_)
        elif dose.value:
            key = (dose.value, dose.unit, per_day, prn, route, text, complex_)
        else:
            return _new_sig(dose, per_day, prn, route, text, complex_)
        sig = _SIG_MEMO.get(key)
        if sig is None:
            sig = _new_sig(dose, per_day, prn, route, text, complex_)
            if len(_SIG_MEMO) < _MEMO_MAX:
                _SIG_MEMO[key] = sig
        return sig
    return _new_sig(dose, per_day, prn, route, text, complex_)


_SIG_MEMO: dict[tuple[Any, ...], Sig] = {}

# Timing.repeat elements that change a regimen but that the comparison does not weigh:
# a sig carrying one is flagged for review rather than compared.
_TIMING_NOT_COMPARED = (
    "frequencyMax",
    "periodMax",
    "dayOfWeek",
    "boundsDuration",
    "boundsRange",
    "count",
    "countMax",
)
_TIMING_NOT_COMPARED_SET = frozenset(_TIMING_NOT_COMPARED)


_WORD_OR_SIG_RE = re.compile(r"[a-z]+(?:\.[a-z])*|\d+(?:\.\d+)?|/")


# --------------------------------------------------------------------------- resources


@dataclass(slots=True)
class MedInfo:
    """One medication resource as the reconciliation sees it."""

    ref: str
    resource_type: str
    status: str  # active | held | stopped
    identity: Identity
    sig: Sig
    label: str
    concept: Resource | None = None
    dosage: list[Resource] = field(default_factory=list)
    stop_reason: str | None = None
    resolved: bool = True  # False when a medicationReference could not be resolved
    unconfirmed: str | None = None  # e.g. a draft or unknown-status order: confirm it
    held_by: str | None = None  # the sig text that holds an otherwise active order

    @property
    def identified(self) -> bool:
        return bool(self.identity.ingredients)

    @property
    def route(self) -> str | None:
        return self.sig.route or self.identity.route


def concept_text(concept: Resource | None) -> str | None:
    """A readable name for a CodeableConcept."""
    if not concept:
        return None
    if concept.get("text"):
        return str(concept["text"])
    for c in concept.get("coding") or ():
        if c.get("display"):
            return str(c["display"])
    for c in concept.get("coding") or ():
        if c.get("code"):
            return f"{c.get('system', '')}|{c['code']}"
    return None


def medication_of(
    resource: Resource, resolve: Resolver | None
) -> tuple[Identity, Resource | None, bool]:
    """(identity, CodeableConcept for output, resolved?) of a MedicationRequest/Statement."""
    cc = resource.get("medicationCodeableConcept")
    if cc:
        return identify_key(coding_key(cc)), cc, True
    ref = (resource.get("medicationReference") or {}).get("reference")
    if not ref:
        return UNIDENTIFIED, None, False
    med: Resource | None = None
    if ref.startswith("#"):
        med = next(
            (c for c in resource.get("contained") or () if c.get("id") == ref[1:]),
            None,
        )
    elif resolve is not None:
        med = resolve(ref)
    if not med or med.get("resourceType") != "Medication":
        display = (resource.get("medicationReference") or {}).get("display")
        ident = parse_name(display) if display else UNIDENTIFIED
        return ident, ({"text": display} if display else None), False
    return identify_medication(med), med.get("code"), True


def stop_reason_of(resource: Resource) -> str | None:
    """The recorded reason a medication was stopped, if any."""
    reason = resource.get("statusReason")
    if isinstance(reason, list):
        reason = reason[0] if reason else None
    return concept_text(reason)


def label_of(identity: Identity, fallback: str | None) -> str:
    """Readable name: ingredient names joined by ' / ', else the resource's own text."""
    if identity.ingredients:
        return " / ".join(identity.ingredients)
    return fallback or "unknown medication"


def ingredient_info(name: str) -> Ingredient | None:
    """The table entry of an ingredient name."""
    return load_tables().ingredients.get(name)


def clear_caches() -> None:
    """Forget every memoised name, concept, sig and dose (the tables stay loaded)."""
    for fn in (parse_name, identify_key, parse_form, parse_sig_text, hold_instruction):
        fn.cache_clear()
    _UNIT_NORM.clear()
    _DOSE_MEMO.clear()
    _SIG_MEMO.clear()
    for clear in _ON_CLEAR:
        clear()


_ON_CLEAR: list[Callable[[], None]] = []  # caches of other modules built on the tables


def on_clear_caches(clear: Callable[[], None]) -> None:
    """Register a cache that depends on the tables (cleared with them)."""
    _ON_CLEAR.append(clear)


# --------------------------------------------------------------------------- local RxNorm index


class LocalTerminology(Protocol):
    """What identification needs from a local terminology (fhircare.terminology.rxnorm)."""

    def concept(self, rxcui: str) -> Any: ...  # a Concept (tty, name, ingredients, dose form)

    def names(self) -> list[tuple[str, str, tuple[Any, ...]]]: ...


# Words that make a brand name of the full RxNorm too generic to match inside free text
# ("Pain Relief", "Allergy", "Sleep Aid"): such brands are left to their codes.
_GENERIC_BRAND_WORDS = frozenset(
    [
        "pain",
        "relief",
        "reliever",
        "allergy",
        "allergies",
        "cold",
        "cough",
        "sleep",
        "night",
        "day",
        "nighttime",
        "daytime",
        "extra",
        "strength",
        "maximum",
        "regular",
        "children",
        "childrens",
        "infant",
        "infants",
        "junior",
        "plus",
        "formula",
        "care",
        "sinus",
        "nasal",
        "itch",
        "headache",
        "arthritis",
        "flu",
        "severe",
        "multi",
        "symptom",
        "aid",
        "caplet",
        "caplets",
        "tablets",
        "tablet",
        "capsule",
        "capsules",
        "liquid",
        "gel",
        "gels",
        "cream",
        "ointment",
        "spray",
        "drops",
        "patch",
        "original",
        "advanced",
        "complete",
        "relief",
        "rapid",
        "fast",
        "release",
        "dual",
        "action",
        "mild",
        "gentle",
        "natural",
    ]
)


class _Local:
    """A local index joined to the built-in tables: identification by code, phrases by name."""

    def __init__(self, index: LocalTerminology, base: Tables) -> None:
        self.index = index
        self.base = base
        self.tables = _with_index(base, index)
        self._identities: dict[str, Identity | None] = {}

    def name_of(self, rxcui: str, name: str) -> str:
        return self.base.by_rxcui.get(rxcui) or name.lower()

    def identify(self, rxcui: str) -> Identity | None:
        if rxcui in self._identities:
            return self._identities[rxcui]
        c = self.index.concept(rxcui)
        ident = None if c is None or not c.ingredients else self._identity(c)
        if len(self._identities) < 65536:
            self._identities[rxcui] = ident
        return ident

    def _identity(self, c: Any) -> Identity:
        names = [self.name_of(p.rxcui, p.name) for p in c.ingredients]
        strength = []
        for name, part in zip(names, c.ingredients, strict=True):
            m = _STRENGTH_RE.search(part.strength.lower()) if part.strength else None
            if m:
                strength.append((name, *_norm_strength(float(m.group(1)), m.group(2), m.group(3))))
        salt = None
        if len(c.ingredients) == 1 and c.ingredients[0].precise:
            precise, base = c.ingredients[0].precise.lower(), c.ingredients[0].name.lower()
            salt = precise.removeprefix(base).strip(" ,") or None
        form = parse_form(c.dose_form) if c.dose_form else None
        release = form[1] if form else None
        if release is None and c.tty in ("SCD", "SBD"):
            release = parse_name(c.name).release
        order = self.tables.combo_order.get(frozenset(names))
        return Identity(
            ingredients=order or (tuple(sorted(names)) if len(names) > 1 else tuple(names)),
            strength=tuple(sorted(strength)) if len(strength) == len(names) else (),
            form=form[0] if form else None,
            release=release,
            salt=salt,
            route=form[2] if form else None,
            source="rxnorm-index",
        )


def _with_index(base: Tables, index: LocalTerminology) -> Tables:
    """The built-in tables with the index's ingredients and names added (index first)."""
    ingredients = dict(base.ingredients)
    by_rxcui = dict(base.by_rxcui)
    phrases = dict(base.phrases)
    reserved = base.salt_words | {k for k, p in base.phrases.items() if p.kind != "ingredient"}
    for name, tty, parts in index.names():
        key = _words(name)
        if not key or key in reserved:
            continue
        if tty == "BN" and (_GENERIC_BRAND_WORDS & set(key.split()) or not key[0].isalpha()):
            continue
        ings = []
        for part in parts:
            ing = base.by_rxcui.get(part.rxcui) or part.name.lower()
            if ing not in ingredients:
                ingredients[ing] = Ingredient(ing, part.rxcui, (), False, False, known=False)
                by_rxcui.setdefault(part.rxcui, ing)
            ings.append(ing)
        known = phrases.get(key)
        if known is not None and set(known.ingredients) == set(ings):
            continue  # the table's phrase says the same and may carry salt or release facts
        if tty == "PIN" and len(parts) == 1:
            salt = key.removeprefix(_words(parts[0].name)).strip() or None
            phrases[key] = Phrase("salt", tuple(ings), salt=salt)
        elif tty == "BN":
            phrases[key] = Phrase("brand", tuple(ings))
        else:
            phrases[key] = Phrase("ingredient", tuple(ings))
    return replace(
        base,
        ingredients=ingredients,
        by_rxcui=by_rxcui,
        phrases=phrases,
        max_words=max(len(p.split()) for p in phrases),
    )


_LOCAL: _Local | None = None


def use_local_index(index: LocalTerminology | None) -> None:
    """Identify through `index` before the built-in table (None: the built-in table only)."""
    global _LOCAL
    _LOCAL = _Local(index, _load_tables(None)) if index is not None else None
    load_tables.cache_clear()
    clear_caches()


def local_index() -> LocalTerminology | None:
    """The local index in use, if any."""
    return _LOCAL.index if _LOCAL is not None else None
