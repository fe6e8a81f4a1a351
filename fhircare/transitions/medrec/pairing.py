"""Pairing: which pre-admission medication is which discharge medication.

By the SET of ingredients (RxNorm codes, brands, salts, combinations) when identified, else by
identical normalised text; never by string similarity.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from fhircare.transitions.medications import MedInfo, load_tables, on_clear_caches
from fhircare.transitions.medrec.compare import compare

# (RxNorm codes, classes, high-alert?, chronic?, no clinical facts?) of an ingredient set
Facts = tuple[list[str] | None, frozenset[str], bool, bool, bool]
NO_FACTS: Facts = (None, frozenset(), False, False, False)
Compared = dict[tuple[int, int], tuple[list[str], list[str], list[str]]]


@lru_cache(maxsize=4096)
def facts(ingredients: tuple[str, ...]) -> Facts:
    """The facts of an ingredient set, from the table. An ingredient only a local RxNorm index
    knows has a code but no clinical facts (its omission is flagged: chronic is unknown)."""
    t = load_tables()
    known = [t.ingredients[n] for n in ingredients if n in t.ingredients]
    codes = [i.rxcui for i in known if i.rxcui]
    classes = frozenset(c for i in known for c in i.classes)
    return (
        codes or None,
        classes,
        any(i.high_alert for i in known),
        any(i.chronic for i in known),
        any(not i.known for i in known),
    )


def text_key(info: MedInfo) -> str:
    """The pairing key of an unidentified medication: its label, case and spaces folded."""
    return " ".join(info.label.lower().split())


def pair(
    pre: list[MedInfo],
    post: list[MedInfo],
    pre_keys: dict[int, Any],
    post_keys: dict[int, Any],
    compared: Compared,
) -> dict[int, int]:
    """Pair pre and post medications with the same key, fewest differences first.

    `pre_keys`/`post_keys` map list positions to keys (in list order); comparisons made to
    rank candidates are kept in `compared` for reuse.
    """
    post_by_key: dict[Any, list[int]] = {}
    for j, k in post_keys.items():
        js = post_by_key.get(k)
        if js is None:
            post_by_key[k] = [j]
        else:
            js.append(j)
    pairs: dict[int, int] = {}
    candidates: list[tuple[int, int, int]] = []
    for i, k in pre_keys.items():
        js = post_by_key.get(k)
        if not js:
            continue
        if len(js) == 1:
            candidates.append((0, i, js[0]))
        else:
            b = pre[i]
            for j in js:
                compared[i, j] = result = compare(b, post[j])
                candidates.append((len(result[0]) * 2 + len(result[2]), i, j))
    if not candidates:
        return pairs
    candidates.sort()
    taken: set[int] = set()
    for _, i, j in candidates:
        if i not in pairs and j not in taken:
            pairs[i] = j
            taken.add(j)
    return pairs


def keys_and_facts(
    meds: list[MedInfo],
) -> tuple[dict[int, Any], dict[int, Any], list[Facts]]:
    """Per medication, once: its ingredient-set key (identified) or text key, and its facts."""
    keys: dict[int, Any] = {}
    text: dict[int, Any] = {}
    out: list[Facts] = []
    for i, m in enumerate(meds):
        ings = m.identity.ingredients
        if ings:
            keys[i] = frozenset(ings)
        else:
            text[i] = text_key(m)
        out.append(facts(ings))
    return keys, text, out


on_clear_caches(facts.cache_clear)  # facts follow the tables (a local index adds drugs)
