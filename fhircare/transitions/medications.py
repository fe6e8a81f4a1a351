"""Medication identification: what a medication resource is and how it is taken.

Identity (ingredient set, strength, dose form, release, salt) comes from RxNorm codes and from
names parsed against `mappings/medications.yaml` by exact phrase lookup: a name the table does
not know stays unidentified (never matched by string similarity). Dosage (dose, frequency, PRN,
route) comes from FHIR Dosage, falling back to its free text.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

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
    """The parsed reference table (see mappings/medications.yaml)."""

    ingredients: dict[str, Ingredient]
    by_rxcui: dict[str, str]
    phrases: dict[str, Phrase]
    max_words: int
    products: dict[str, str]
    salt_words: frozenset[str]
    classes: dict[str, dict[str, Any]]
    duplicate_groups: tuple[dict[str, Any], ...]
    high_alert: dict[str, str]
    combo_order: dict[frozenset[str], tuple[str, ...]]
    routes_snomed: dict[str, str]
    route_words: dict[str, str]
    timing_codes: dict[str, float]


def mappings_path() -> Path:
    """Where medications.yaml lives (fhircare.paths: $FHIRCARE_MAPPINGS or the package's)."""
    return mappings_dir() / "medications.yaml"


def _words(text: str) -> str:
    return " ".join(_WORD_RE.findall(text.lower()))


@lru_cache(maxsize=4)
def load_tables(path: str | None = None) -> Tables:
    """Load and index the reference table once (cached per path)."""
    raw = yaml.safe_load(Path(path or mappings_path()).read_text(encoding="utf-8"))
    high_alert = {cls: v["basis"] for cls, v in (raw.get("high_alert") or {}).items()}
    ingredients: dict[str, Ingredient] = {}
    for name, v in raw["ingredients"].items():
        classes = tuple(v.get("classes") or ())
        rxcui = v.get("rxcui")
        ingredients[name] = Ingredient(
            name=name,
            rxcui=str(rxcui) if rxcui is not None else None,
            classes=classes,
            chronic=bool(v.get("chronic")),
            high_alert=any(c in high_alert for c in classes),
        )
    phrases: dict[str, Phrase] = {}

    def add(text: str, phrase: Phrase) -> None:
        phrases[_words(text)] = phrase

    for name in ingredients:
        add(name, Phrase("ingredient", (name,)))
    for syn, target in (raw.get("synonyms") or {}).items():
        add(syn, Phrase("ingredient", (target,)))
    for name, v in (raw.get("salts") or {}).items():
        add(name, Phrase("salt", (v["ingredient"],), salt=v.get("salt"), release=v.get("release")))
    for name, v in (raw.get("brands") or {}).items():
        add(
            name,
            Phrase("brand", tuple(v["ingredients"]), salt=v.get("salt"), release=v.get("release")),
        )
    for name, v in (raw.get("forms") or {}).items():
        add(name, Phrase("form", form=v["form"], release=v.get("release"), route=v.get("route")))
    for name, rel in (raw.get("release_markers") or {}).items():
        add(name, Phrase("release", release=rel))
    for phrase in phrases.values():
        for ing in phrase.ingredients:
            if ing not in ingredients:
                raise ValueError(f"medications.yaml: unknown ingredient {ing!r}")
    routes = raw.get("routes") or {}
    return Tables(
        ingredients=ingredients,
        by_rxcui={i.rxcui: n for n, i in ingredients.items() if i.rxcui},
        phrases=phrases,
        max_words=max(len(p.split()) for p in phrases),
        products={str(k): v for k, v in (raw.get("products") or {}).items()},
        salt_words=frozenset(raw.get("salt_words") or ()),
        classes=raw.get("classes") or {},
        duplicate_groups=tuple(raw.get("duplicate_groups") or ()),
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
    source: str = "text"  # rxnorm-product | rxnorm-ingredient | text | medication

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
_PAIR_RE = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)\s*[/-]\s*(\d+(?:\.\d+)?)(?:\s*mg)?(?![\d.a-z/])")
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
    if pair:  # "Norco 5/325", "hydrocodone/APAP 10-325 mg": in the product's ingredient order
        for ing, val in zip(names, (pair.group(1), pair.group(2)), strict=True):
            strength[ing] = (round(float(val), 6), "mg")
    mention_ings = [(pos, ings) for pos, ings, p in mentions if p.kind != "brand"]
    for m in () if pair else _STRENGTH_RE.finditer(low):
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
    order = t.combo_order.get(frozenset(names))
    ordered = order if order else tuple(sorted(names)) if len(names) > 1 else tuple(names)
    return Identity(
        ingredients=ordered,
        strength=tuple(sorted((k, v, u) for k, (v, u) in strength.items())),
        form=form,
        release=release,
        salt=salt,
        route=route,
    )


def _coding_key(concept: Resource | None) -> tuple[Any, ...]:
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
def _identify_key(key: tuple[Any, ...]) -> Identity:
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
    for system, code, _ in codings:
        if system != RXNORM or not code:
            continue
        if code in t.products:
            ident = parse_name(t.products[code])
            extra = next((p for p in parsed if p.key == ident.key), None)
            return _merge(ident, extra, "rxnorm-product")
        if code in t.by_rxcui:
            ing = t.by_rxcui[code]
            extra = next((p for p in parsed if p.key == {ing}), None)
            return _merge(Identity(ingredients=(ing,)), extra, "rxnorm-ingredient")
    return parsed[0] if parsed else UNIDENTIFIED


def _merge(base: Identity, extra: Identity | None, source: str) -> Identity:
    if extra is None:
        return Identity(
            base.ingredients, base.strength, base.form, base.release, base.salt, base.route, source
        )
    return Identity(
        ingredients=base.ingredients,
        strength=base.strength or extra.strength,
        form=base.form or extra.form,
        release=base.release or extra.release,
        salt=base.salt or extra.salt,
        route=base.route or extra.route,
        source=source,
    )


def identify_concept(concept: Resource | None) -> Identity:
    """Identify a CodeableConcept (RxNorm product/ingredient code first, then names)."""
    return _identify_key(_coding_key(concept))


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


# Free text this parser cannot turn into one exact dose and frequency: fractions
# ("1/2 tablet", "½"), ranges ("1-2 tablets", "every 4-6 hours", "1 to 2"), alternatives.
_TEXT_COMPLEX_RE = re.compile(
    r"\d\s*/\s*\d|[½¼¾⅓⅔⅛]|\d\s*(?:-|–|to|or)\s*\d|\bhalf\b|\bquarter\b"
    r"|\bthen\b|\btaper|\balternat|\bmonday|\btuesday|\bwednesday|\bthursday|\bfriday"
    r"|\bsaturday|\bsunday|\bweekly\b|\bfor \d+ days?\b"
)


@lru_cache(maxsize=8192)
def parse_sig_text(text: str) -> Sig:
    """Dose, frequency, PRN and route read from free-text instructions ("1 tab po bid")."""
    t = load_tables()
    lowered = text.lower()
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
        return _identify_key(_coding_key(cc)), cc, True
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
    for fn in (parse_name, _identify_key, parse_form, parse_sig_text):
        fn.cache_clear()
    _UNIT_NORM.clear()
    _DOSE_MEMO.clear()
    _SIG_MEMO.clear()
