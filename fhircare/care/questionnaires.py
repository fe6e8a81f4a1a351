"""Validate a QuestionnaireResponse against its Questionnaire (FHIR R4 rules).

Checked: the response names the Questionnaire; every item's linkId exists at its level; no
repeats of non-repeating items or answers; answer types match item types (choice answers
must be one of the answerOptions, or of a contained answerValueSet); exclusive options
stand alone; maxLength; enableWhen (every operator, enableBehavior any/all) with no answers
allowed in disabled items; and, when the response is completed or amended, required items.
A Questionnaire without items (metadata only) constrains nothing but the reference.

R4 enableWhen semantics, applied literally: `=` is true when some answer equals the value,
`!=` when no answer does (so also when the question is unanswered), `>`/`<`/`>=`/`<=` when
some answer compares so; `exists` compares "has an answer" with answerBoolean. The question
is looked up nearest first (inside the same repeating group instance, then outwards).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from fhircare.care import definitions
from fhircare.fhir.errors import NotFound, Unprocessable
from fhircare.store.base import Store

QR = "QuestionnaireResponse"
EXCLUSIVE = "http://hl7.org/fhir/StructureDefinition/questionnaire-optionExclusive"
REQUIRED_WHEN = ("completed", "amended")

# Questionnaire item type -> the answer value[x] keys it accepts.
VALUE_KEYS: dict[str, tuple[str, ...]] = {
    "boolean": ("valueBoolean",),
    "decimal": ("valueDecimal",),
    "integer": ("valueInteger",),
    "date": ("valueDate",),
    "dateTime": ("valueDateTime",),
    "time": ("valueTime",),
    "string": ("valueString",),
    "text": ("valueString",),
    "url": ("valueUri",),
    "choice": ("valueCoding",),
    "open-choice": ("valueCoding", "valueString"),
    "attachment": ("valueAttachment",),
    "reference": ("valueReference",),
    "quantity": ("valueQuantity",),
}
ALL_VALUE_KEYS = frozenset(k for keys in VALUE_KEYS.values() for k in keys)


@dataclass
class _Problem:
    expression: str
    message: str


@dataclass
class _Node:
    """One answered QuestionnaireResponse item with the chain of nodes containing it."""

    item: dict[str, Any]
    ancestors: tuple[int, ...]


@dataclass
class _Validator:
    questionnaire: dict[str, Any]
    qr: dict[str, Any]
    problems: list[_Problem] = field(default_factory=list)
    index: dict[str, list[_Node]] = field(default_factory=dict)

    def run(self) -> None:
        self._check_reference()
        if not self.questionnaire.get("item"):
            return  # a metadata-only Questionnaire (e.g. US Core AHC HRSN): nothing to check
        self._index(self.qr.get("item") or [], ())
        self._level(self.questionnaire.get("item") or [], self.qr.get("item") or [], QR, ())

    # ---- setup ------------------------------------------------------------------------------

    def _check_reference(self) -> None:
        canonical = self.qr.get("questionnaire")
        url, version = self.questionnaire.get("url"), self.questionnaire.get("version")
        if not canonical:
            self._fail(f"{QR}.questionnaire", "The response does not name its Questionnaire")
            return
        base, _, want = canonical.partition("|")
        if base == f"Questionnaire/{self.questionnaire.get('id')}":
            return  # a literal reference, as some servers write it
        if url and base != url:
            self._fail(
                f"{QR}.questionnaire",
                f"The response is for Questionnaire '{canonical}', not '{url}'",
            )
        elif want and version and want != version:
            self._fail(
                f"{QR}.questionnaire",
                f"The response is for version {want} of '{base}', the Questionnaire is {version}",
            )

    def _index(self, items: list[dict[str, Any]], ancestors: tuple[int, ...]) -> None:
        for item in items:
            if not isinstance(item, dict):
                continue
            chain = (*ancestors, id(item))
            self.index.setdefault(str(item.get("linkId")), []).append(_Node(item, ancestors))
            self._index(item.get("item") or [], chain)
            for answer in item.get("answer") or []:
                if isinstance(answer, dict):
                    self._index(answer.get("item") or [], (*chain, id(answer)))

    def _fail(self, expression: str, message: str) -> None:
        self.problems.append(_Problem(expression, message))

    # ---- structure --------------------------------------------------------------------------

    def _level(
        self,
        q_items: list[dict[str, Any]],
        qr_items: list[Any],
        path: str,
        ancestors: tuple[int, ...],
    ) -> None:
        """Check the response items under one parent against the Questionnaire items there."""
        known = {q.get("linkId"): q for q in q_items}
        instances: dict[str, list[tuple[int, dict[str, Any]]]] = {}
        for i, item in enumerate(qr_items):
            where = f"{path}.item[{i}]"
            if not isinstance(item, dict) or not isinstance(item.get("linkId"), str):
                self._fail(where, "Every response item needs a linkId")
                continue
            link = item["linkId"]
            if link not in known:
                self._fail(where, f"Item '{link}' is not in the Questionnaire at this level")
                continue
            instances.setdefault(link, []).append((i, item))
        for q_item in q_items:
            link = q_item.get("linkId")
            found = instances.get(link, [])
            if len(found) > 1 and not (q_item.get("type") == "group" and q_item.get("repeats")):
                self._fail(
                    f"{path}.item[{found[1][0]}]",
                    f"Item '{link}' does not repeat but appears {len(found)} times",
                )
            if not self._enabled(q_item, ancestors):
                for i, item in found:
                    where = self._first_answer_path(item, f"{path}.item[{i}]")
                    if where:
                        self._fail(
                            where,
                            f"Item '{link}' is disabled by its enableWhen and must not be answered",
                        )
                continue
            if (
                q_item.get("required")
                and self.qr.get("status") in REQUIRED_WHEN
                and not any(_has_content(item) for _, item in found)
            ):
                self._fail(path, f"Required item '{link}' ({_label(q_item)}) is not answered")
            for i, item in found:
                self._item(q_item, item, f"{path}.item[{i}]", (*ancestors, id(item)))

    def _item(
        self, q_item: dict[str, Any], item: dict[str, Any], path: str, chain: tuple[int, ...]
    ) -> None:
        kind = q_item.get("type")
        link = q_item.get("linkId")
        children = q_item.get("item") or []
        answers = item.get("answer") or []
        if kind in ("group", "display"):
            if answers:
                self._fail(f"{path}.answer[0]", f"Item '{link}' is a {kind} and takes no answer")
            if kind == "display" and item.get("item"):
                self._fail(f"{path}.item[0]", f"Item '{link}' is a display item: no child items")
            if kind == "group":
                self._level(children, item.get("item") or [], path, chain)
            return
        if item.get("item"):  # R4 nests a question's children under its answers
            self._level(children, item["item"], path, chain)
        if len(answers) > 1 and not q_item.get("repeats"):
            self._fail(
                f"{path}.answer[1]", f"Item '{link}' does not repeat but has {len(answers)} answers"
            )
        exclusive = _exclusive_options(q_item)
        for j, answer in enumerate(answers):
            where = f"{path}.answer[{j}]"
            if not isinstance(answer, dict):
                self._fail(where, f"Answer {j} of item '{link}' is not an object")
                continue
            self._answer(q_item, answer, where)
            if exclusive and len(answers) > 1 and _value(answer) in exclusive:
                self._fail(
                    where, f"Item '{link}': this option excludes every other answer to the item"
                )
            if children or answer.get("item"):
                self._level(children, answer.get("item") or [], where, (*chain, id(answer)))

    def _answer(self, q_item: dict[str, Any], answer: dict[str, Any], where: str) -> None:
        link, kind = q_item.get("linkId"), q_item.get("type")
        keys = [k for k in answer if k in ALL_VALUE_KEYS or k.startswith("value")]
        allowed = _allowed_keys(q_item)
        if len(keys) != 1:
            self._fail(where, f"Answer to item '{link}' must hold exactly one value[x]")
            return
        key = keys[0]
        if key not in allowed:
            self._fail(
                where,
                f"Item '{link}' is of type {kind}: expected {' or '.join(allowed)}, got {key}",
            )
            return
        value = answer[key]
        if not _type_ok(key, value):
            self._fail(where, f"Item '{link}': {key} holds a value of the wrong type")
            return
        limit = q_item.get("maxLength")
        if isinstance(value, str) and isinstance(limit, int) and len(value) > limit:
            self._fail(where, f"Item '{link}': answer longer than maxLength {limit}")
        if kind in ("choice", "open-choice") and not (
            kind == "open-choice" and key == "valueString"
        ):
            options = self._options(q_item)
            if options is not None and not any(_same_option(key, value, o) for o in options):
                shown = value.get("code") if isinstance(value, dict) else value
                self._fail(
                    where, f"Item '{link}': answer '{shown}' is not one of the permitted options"
                )

    def _options(self, q_item: dict[str, Any]) -> list[tuple[str, Any]] | None:
        """Permitted (value key, value) pairs, or None when they cannot be known here."""
        if q_item.get("answerOption"):
            return [
                (k, v)
                for o in q_item["answerOption"]
                for k, v in o.items()
                if k.startswith("value")
            ]
        vs_ref = q_item.get("answerValueSet")
        if isinstance(vs_ref, str) and vs_ref.startswith("#"):
            for vs in self.questionnaire.get("contained") or []:
                if vs.get("resourceType") == "ValueSet" and vs.get("id") == vs_ref[1:]:
                    codes = list(_valueset_codings(vs))
                    return [("valueCoding", c) for c in codes] if codes else None
        return None

    # ---- enableWhen -------------------------------------------------------------------------

    def _enabled(self, q_item: dict[str, Any], ancestors: tuple[int, ...]) -> bool:
        conditions = q_item.get("enableWhen") or []
        if not conditions:
            return True
        results = [self._condition(c, ancestors) for c in conditions]
        if q_item.get("enableBehavior") == "any":
            return any(results)
        return all(results)

    def _condition(self, cond: dict[str, Any], ancestors: tuple[int, ...]) -> bool:
        answers = self._answers_of(str(cond.get("question")), ancestors)
        operator = cond.get("operator")
        expected_key = next((k for k in cond if k.startswith("answer")), None)
        if expected_key is None:
            return False
        expected = cond[expected_key]
        if operator == "exists":
            return bool(answers) == bool(expected)
        values = [v for a in answers for v in [_value(a)] if v is not None]
        if operator == "=":
            return any(_compare(v, expected_key, expected) == 0 for v in values)
        if operator == "!=":
            return not any(_compare(v, expected_key, expected) == 0 for v in values)
        tests = {
            ">": lambda c: c > 0,
            "<": lambda c: c < 0,
            ">=": lambda c: c >= 0,
            "<=": lambda c: c <= 0,
        }
        test = tests.get(str(operator))
        if test is None:
            return False
        return any(
            (c := _compare(v, expected_key, expected)) is not None and test(c) for v in values
        )

    def _answers_of(self, link: str, ancestors: tuple[int, ...]) -> list[dict[str, Any]]:
        """Answers of the question nearest to `ancestors` (deepest shared container)."""
        nodes = self.index.get(link, [])
        if not nodes:
            return []

        def shared(node: _Node) -> int:
            n = 0
            for a, b in zip(node.ancestors, ancestors, strict=False):
                if a != b:
                    break
                n += 1
            return n

        best = max(shared(n) for n in nodes)
        return [a for n in nodes if shared(n) == best for a in n.item.get("answer") or []]

    def _first_answer_path(self, item: dict[str, Any], path: str) -> str | None:
        """The path of the first answer anywhere under a response item, or None."""
        if item.get("answer"):
            return f"{path}.answer[0]"
        for i, child in enumerate(item.get("item") or []):
            if isinstance(child, dict) and (
                found := self._first_answer_path(child, f"{path}.item[{i}]")
            ):
                return found
        return None


# ---- helpers ----------------------------------------------------------------------------------


def _label(q_item: dict[str, Any]) -> str:
    text = str(q_item.get("text") or "")
    return text if len(text) <= 60 else text[:57] + "..."


def _has_content(item: dict[str, Any]) -> bool:
    if item.get("answer"):
        return True
    return any(isinstance(c, dict) and _has_content(c) for c in item.get("item") or [])


def _allowed_keys(q_item: dict[str, Any]) -> tuple[str, ...]:
    kind = str(q_item.get("type"))
    if kind in ("choice", "open-choice") and q_item.get("answerOption"):
        keys = tuple(
            dict.fromkeys(k for o in q_item["answerOption"] for k in o if k.startswith("value"))
        )
        return (*keys, "valueString") if kind == "open-choice" else keys
    return VALUE_KEYS.get(kind, ())


def _type_ok(key: str, value: Any) -> bool:
    if key == "valueBoolean":
        return isinstance(value, bool)
    if key == "valueInteger":
        return isinstance(value, int) and not isinstance(value, bool)
    if key == "valueDecimal":
        return isinstance(value, int | float | Decimal) and not isinstance(value, bool)
    if key in ("valueCoding", "valueQuantity", "valueReference", "valueAttachment"):
        return isinstance(value, dict)
    return isinstance(value, str)


def _value(answer: dict[str, Any]) -> tuple[str, Any] | None:
    for key, value in answer.items():
        if key.startswith("value"):
            return key, _freeze(value)
    return None


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        if "code" in value and ("system" in value or "display" in value or len(value) == 1):
            return ("coding", value.get("system"), value.get("code"))
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    return value


def _exclusive_options(q_item: dict[str, Any]) -> set[tuple[str, Any]]:
    out = set()
    for option in q_item.get("answerOption") or []:
        if any(
            e.get("url") == EXCLUSIVE and e.get("valueBoolean")
            for e in option.get("extension") or []
        ):
            found = _value(option)
            if found:
                out.add(found)
    return out


def _same_option(key: str, value: Any, option: tuple[str, Any]) -> bool:
    okey, ovalue = option
    if key != okey:
        return False
    if key == "valueCoding":
        if value.get("code") != ovalue.get("code"):
            return False
        return not (value.get("system") and ovalue.get("system")) or (
            value.get("system") == ovalue.get("system")
        )
    if key == "valueReference":
        return value.get("reference") == ovalue.get("reference")
    return value == ovalue


def _valueset_codings(vs: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for include in (vs.get("compose") or {}).get("include") or []:
        for concept in include.get("concept") or []:
            yield {"system": include.get("system"), "code": concept.get("code")}

    def walk(contains: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for c in contains:
            if c.get("code"):
                yield {"system": c.get("system"), "code": c.get("code")}
            yield from walk(c.get("contains") or [])

    yield from walk((vs.get("expansion") or {}).get("contains") or [])


def _compare(actual: tuple[str, Any], expected_key: str, expected: Any) -> int | None:
    """-1/0/1 comparing an answer with an enableWhen answer[x], None when incomparable."""
    key, value = actual
    kind = expected_key.removeprefix("answer")
    if kind == "Coding":
        if key != "valueCoding" or not isinstance(value, tuple):
            return None
        _, system, code = value
        same = code == expected.get("code") and (
            not system or not expected.get("system") or system == expected.get("system")
        )
        return 0 if same else None
    if kind in ("Decimal", "Integer"):
        if key not in ("valueDecimal", "valueInteger"):
            return None
        return _cmp(Decimal(str(value)), Decimal(str(expected)))
    if kind == "Quantity":
        if key != "valueQuantity":
            return None
        mine = dict(value)
        if (mine.get("system"), mine.get("code")) != (expected.get("system"), expected.get("code")):
            return None
        if mine.get("value") is None or expected.get("value") is None:
            return None
        return _cmp(Decimal(str(mine["value"])), Decimal(str(expected["value"])))
    if kind == "Reference":
        if key != "valueReference":
            return None
        return 0 if dict(value).get("reference") == expected.get("reference") else None
    if kind == "Boolean":
        return 0 if key == "valueBoolean" and value is expected else None
    want = {
        "Date": ("valueDate", "valueDateTime"),
        "DateTime": ("valueDateTime", "valueDate"),
        "Time": ("valueTime",),
        "String": ("valueString",),
    }.get(kind, ())
    if key not in want or not isinstance(value, str):
        return None
    if kind in ("Date", "DateTime"):
        n = min(len(value), len(expected))
        return _cmp(value[:n], expected[:n])
    return _cmp(value, expected)


def _cmp(a: Any, b: Any) -> int:
    return (a > b) - (a < b)


# ---- public API -------------------------------------------------------------------------------


def validate_response(qr: dict[str, Any], questionnaire: dict[str, Any]) -> None:
    """Raise `Unprocessable` (every problem as an issue, the first as the main one) when
    the QuestionnaireResponse does not conform to the Questionnaire."""
    validator = _Validator(questionnaire, qr)
    validator.run()
    if validator.problems:
        first, *rest = validator.problems
        raise Unprocessable(
            first.message,
            expression=[first.expression],
            issues=[
                {
                    "severity": "error",
                    "code": "invalid",
                    "diagnostics": p.message,
                    "expression": [p.expression],
                }
                for p in rest[:50]
            ],
        )


def resolve_questionnaire(store: Store, canonical: str) -> dict[str, Any]:
    """The Questionnaire a response names (`url`, `url|version`, or a literal
    `Questionnaire/id`), from the store or, for fhircare's own instruments, from `profiles/`.
    Raises NotFound."""
    base, _, version = canonical.partition("|")
    kind, _, rid = base.partition("/")
    if kind == "Questionnaire" and rid and "/" not in rid and store.exists(kind, rid):
        return store.read(kind, rid)  # a literal reference instead of a canonical url
    found = store.search("Questionnaire", [("url", base)])
    if version:
        found = [q for q in found if q.get("version") == version]
    if found:
        return max(found, key=lambda q: str(q.get("version") or ""))
    known = definitions.by_url(canonical)
    if known is not None and known.get("resourceType") == "Questionnaire":
        return known
    raise NotFound(f"Questionnaire '{canonical}' is not known", expression=[f"{QR}.questionnaire"])
