"""Search-parameter expressions, compiled once: a fast path and fhirpathpy for the rest.

Most SearchParameter expressions of the specification are simple paths: `A.b.c`, unions
`A.b | A.c`, `.where(resolve() is X)`, `as`/`ofType(T)`, `(A.b as T)`, `.where(x='y')`,
`.extension('url')`, `[n]`. Those are compiled into plain dict walks that also know the
FHIR type of each value (from the R4 element definitions), which the search index needs
(a dateTime and a code are both JSON strings). Every other expression is evaluated by
fhirpathpy, compiled once; its values carry no type (the index infers it from the shape).

This is a fast path over the specification's own expressions, not a FHIRPath engine:
`compile_expression` falls back to fhirpathpy for anything it does not recognise.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from fhircare.fhir import registry

# A value found by an expression: (FHIR type code, or "" when unknown; the JSON value).
Typed = tuple[str, Any]
Extractor = Callable[[dict[str, Any]], list[Typed]]


class UnsupportedExpression(ValueError):
    """An expression neither the fast path nor fhirpathpy can evaluate."""


def split_union(expression: str) -> list[str]:
    """Split on top-level `|` (outside parentheses and quotes)."""
    parts: list[str] = []
    depth, quote, start = 0, False, 0
    for i, ch in enumerate(expression):
        if ch == "'" and (i == 0 or expression[i - 1] != "\\"):
            quote = not quote
        elif quote:
            continue
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "|" and depth == 0:
            parts.append(expression[start:i].strip())
            start = i + 1
    parts.append(expression[start:].strip())
    return [p for p in parts if p]


def split_steps(path: str) -> list[str]:
    """'a.where(b='x.y').c' -> ['a', "where(b='x.y')", 'c'] (dots outside quotes/brackets)."""
    steps: list[str] = []
    depth, quote, start = 0, False, 0
    for i, ch in enumerate(path):
        if ch == "'":
            quote = not quote
        elif quote:
            continue
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "." and depth == 0:
            steps.append(path[start:i])
            start = i + 1
    steps.append(path[start:])
    return steps


# ---- the fast path -------------------------------------------------------------------------

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_NAME = re.compile(rf"^({_IDENT})(?:\[(\d+)\])?$")
_RESOLVE = re.compile(rf"^where\(resolve\(\)\s+is\s+({_IDENT})\)(?:\[(\d+)\])?$")
_TYPE_FILTER = re.compile(rf"^(?:as|ofType)\(({_IDENT})\)$")
_EQUALS = re.compile(rf"^where\(({_IDENT})\s*=\s*'([^']*)'\)$")
_EXTENSION = re.compile(r"^extension\('([^']*)'\)$")
_AS = re.compile(rf"^(.*?)\s+as\s+({_IDENT})$")


@dataclass(frozen=True)
class _Step:
    kind: str  # name | resolve | type | equals | extension
    arg: str = ""
    value: str = ""
    index: int | None = None


def _parse_member(member: str, resource_type: str) -> list[_Step] | None:
    """The steps of one union member, or None when it is not a simple path."""
    text = member.strip()
    tail: list[str] = []
    cast: str | None = None
    if text.startswith("("):
        close = _closing_paren(text)
        if close < 0:
            return None
        inner, rest = text[1:close].strip(), text[close + 1 :].strip()
        if rest and not rest.startswith("."):
            return None
        tail = split_steps(rest[1:]) if rest else []
        text = inner
    m = _AS.match(text)
    if m:
        text, cast = m[1].strip(), m[2]
    steps_text = split_steps(text)
    if not steps_text or steps_text[0] not in (resource_type, "Resource", "DomainResource"):
        return None
    steps: list[_Step] = []
    for raw in steps_text[1:] + ([f"as({cast})"] if cast else []) + tail:
        raw = raw.strip()
        if (m := _NAME.match(raw)) is not None:
            steps.append(_Step("name", m[1], index=int(m[2]) if m[2] else None))
        elif (m := _RESOLVE.match(raw)) is not None:
            steps.append(_Step("resolve", m[1], index=int(m[2]) if m[2] else None))
        elif (m := _TYPE_FILTER.match(raw)) is not None:
            steps.append(_Step("type", m[1]))
        elif (m := _EQUALS.match(raw)) is not None:
            steps.append(_Step("equals", m[1], m[2]))
        elif (m := _EXTENSION.match(raw)) is not None:
            steps.append(_Step("extension", m[1]))
        else:
            return None
    return steps


def _closing_paren(text: str) -> int:
    """The index of the parenthesis closing the one that opens `text` (-1: none)."""
    depth = 0
    for i, ch in enumerate(text):
        depth += ch == "("
        depth -= ch == ")"
        if depth == 0:
            return i
    return -1


# A node during a walk: (JSON value, path describing its children, FHIR type code)
_Node = tuple[Any, str, str]


def _reference_type(value: Any) -> str | None:
    if not isinstance(value, dict):
        return None
    ref = value.get("reference")
    if isinstance(ref, str) and not ref.startswith(("#", "urn:")):
        parts = ref.split("/_history/")[0].rstrip("/").split("/")
        if len(parts) >= 2:
            return parts[-2]
    t = value.get("type")
    return t if isinstance(t, str) else None


_StepKey = tuple[str, str, str]  # (JSON property, FHIR type code, path of its children)
_STEP_KEYS: dict[tuple[str, str], tuple[_StepKey, ...] | None] = {}


def _step_keys(path: str, name: str) -> tuple[_StepKey, ...] | None:
    """The JSON properties a step `name` reads under an element path (choice types expanded);
    None when the path has no type information (walk the JSON as is)."""
    key = (path, name)
    found = _STEP_KEYS.get(key, ())
    if found != ():
        return found
    info = registry.types()
    result: tuple[_StepKey, ...] | None
    if not path or info.kind(path.split(".", 1)[0]) is None:
        result = None
    else:
        kids = info.children(path)
        el = kids.get(name)
        if el is not None:
            t = el.types[0] if len(el.types) == 1 else ""
            result = ((name, t, "" if t == "Resource" else info.node_path(el, t)),)
        elif (choice := kids.get(name + "[x]")) is not None:
            result = tuple(
                (name + t[0].upper() + t[1:], t, info.node_path(choice, t)) for t in choice.types
            )
        else:
            result = ()
    _STEP_KEYS[key] = result
    return result


def _children(node: _Node, name: str) -> Iterator[_Node]:
    value, path, _ = node
    if not isinstance(value, dict):
        return
    keys = _step_keys(path, name)
    if keys is None:  # no type information (an unknown path): walk the JSON as is
        items = value.get(name)
        if items is None:
            return
        for item in items if isinstance(items, list) else [items]:
            yield item, "", ""
        return
    for prop, type_code, child_path in keys:
        items = value.get(prop)
        if items is None:
            continue
        for item in items if isinstance(items, list) else (items,):
            if item is None:
                continue
            if type_code == "Resource" and isinstance(item, dict):
                rt = item.get("resourceType", "")
                yield item, rt, rt
            else:
                yield item, child_path, type_code


def _run(steps: list[_Step], resource: dict[str, Any]) -> list[Typed]:
    rtype = resource.get("resourceType", "")
    return [(t, v) for v, _, t in _walk(steps, [(resource, rtype, rtype)])]


def _walk(steps: list[_Step], nodes: list[_Node]) -> list[_Node]:
    """The nodes a fast-path program reaches from `nodes`, one step at a time."""
    for step in steps:
        if step.kind == "name":
            nodes = [c for n in nodes for c in _children(n, step.arg)]
        elif step.kind == "resolve":
            nodes = [n for n in nodes if _reference_type(n[0]) == step.arg]
        elif step.kind == "type":
            nodes = [
                n
                for n in nodes
                if n[2] == step.arg
                or (isinstance(n[0], dict) and n[0].get("resourceType") == step.arg)
            ]
        elif step.kind == "equals":
            nodes = [
                n for n in nodes if isinstance(n[0], dict) and n[0].get(step.arg) == step.value
            ]
        elif step.kind == "extension":
            nodes = [
                c
                for n in nodes
                for c in _children(n, "extension")
                if isinstance(c[0], dict) and c[0].get("url") == step.arg
            ]
        if step.index is not None:
            nodes = nodes[step.index : step.index + 1]
        if not nodes:
            return []
    return nodes


def _fast(expression: str, resource_type: str) -> Extractor | None:
    members = [_parse_member(m, resource_type) for m in split_union(expression)]
    if not members or any(m is None for m in members):
        return None
    programs: list[list[_Step]] = [m for m in members if m is not None]
    if len(programs) == 1:
        only = programs[0]
        return lambda resource: _run(only, resource)
    return lambda resource: [v for p in programs for v in _run(p, resource)]


# ---- fhirpathpy for the rest ---------------------------------------------------------------


def check_syntax(expression: str) -> None:
    """Raise UnsupportedExpression for text that is not FHIRPath (fhirpathpy's own parser
    recovers from syntax errors silently)."""
    from antlr4 import CommonTokenStream, InputStream, Token
    from antlr4.error.ErrorListener import ErrorListener
    from fhirpathpy.parser.generated.FHIRPathLexer import FHIRPathLexer
    from fhirpathpy.parser.generated.FHIRPathParser import FHIRPathParser

    class Raising(ErrorListener):
        def syntaxError(self, recognizer, offending, line, column, msg, e):  # noqa: ANN001, N802
            raise UnsupportedExpression(f"not FHIRPath at column {column}: {msg}")

    lexer = FHIRPathLexer(InputStream(expression))
    lexer.removeErrorListeners()
    lexer.addErrorListener(Raising())
    tokens = CommonTokenStream(lexer)
    parser = FHIRPathParser(tokens)
    parser.removeErrorListeners()
    parser.addErrorListener(Raising())
    parser.expression()
    if tokens.LA(1) != Token.EOF:
        raise UnsupportedExpression(f"not FHIRPath: unexpected text after {expression[:60]!r}")


def _fhirpathpy(expression: str) -> Extractor:
    from fhirpathpy import compile as fp_compile
    from fhirpathpy.models import models

    check_syntax(expression)
    if "resolve()" in expression:
        raise UnsupportedExpression(f"resolve() outside .where(resolve() is T): {expression}")
    try:
        fn = fp_compile(expression, models["r4"])
    except Exception as exc:  # fhirpathpy raises bare Exceptions on syntax errors
        raise UnsupportedExpression(f"cannot compile {expression!r}: {exc}") from exc

    def run(resource: dict[str, Any]) -> list[Typed]:
        try:
            found = fn(resource)
        except Exception:  # an expression that fails on this resource finds nothing
            return []
        return [("", _plain(v)) for v in found if v is not None]

    return run


def _plain(value: Any) -> Any:
    """fhirpathpy may hand back its own node objects: give the JSON value."""
    data = getattr(value, "data", None)
    if data is not None and not isinstance(value, dict | list | str | int | float | bool):
        return data
    if hasattr(value, "isoformat") and not isinstance(value, str):
        return str(value)
    return value


@lru_cache(maxsize=8192)
def compile_expression(expression: str, resource_type: str) -> Extractor:
    """The extractor of an expression on resources of one type (cached per pair)."""
    fast = _fast(expression, resource_type)
    if fast is not None:
        return fast
    return _fhirpathpy(expression)


def is_fast(expression: str, resource_type: str) -> bool:
    """True when the expression runs on the fast path (for tests and benchmarks)."""
    return _fast(expression, resource_type) is not None


def compile_relative(expression: str, type_path: str) -> Extractor:
    """An extractor for a composite component, relative to a value of type `type_path`."""
    return _compile_relative(expression, type_path)


@lru_cache(maxsize=1024)
def _compile_relative(expression: str, type_path: str) -> Extractor:
    members = [_parse_member(f"{_ROOT}.{m}", _ROOT) for m in split_union(expression)]
    if members and all(m is not None for m in members):
        programs = [m for m in members if m is not None]

        def run(value: dict[str, Any]) -> list[Typed]:
            out: list[Typed] = []
            for steps in programs:
                nodes = _walk(steps, [(value, type_path, type_path)])
                out.extend((t, v) for v, _, t in nodes)
            return out

        return run
    return _fhirpathpy(expression)


_ROOT = "__component__"


# ---- nodes with their element paths (composites) and static element lookup -----------------


def compile_nodes(expression: str, resource_type: str) -> Callable[[dict[str, Any]], list[Any]]:
    """Like `compile_expression`, but giving (value, element path, type) nodes, so that a
    composite's components can be evaluated relative to each value."""
    members = [_parse_member(m, resource_type) for m in split_union(expression)]
    if members and all(m is not None for m in members):
        programs = [m for m in members if m is not None]

        def run(resource: dict[str, Any]) -> list[Any]:
            out: list[Any] = []
            for steps in programs:
                out.extend(_run_nodes(steps, resource))
            return out

        return run
    plain = _fhirpathpy(expression)
    return lambda resource: [(v, "", t) for t, v in plain(resource)]


def _run_nodes(steps: list[_Step], resource: dict[str, Any]) -> list[_Node]:
    rtype = resource.get("resourceType", "")
    return _walk(steps, [(resource, rtype, rtype)])


@lru_cache(maxsize=8192)
def final_elements(expression: str, resource_type: str) -> tuple[tuple[str, str], ...] | None:
    """(element path, type) of what each member of a fast-path expression ends on, read
    from the element definitions alone; None when the expression is not on the fast path."""
    members = [_parse_member(m, resource_type) for m in split_union(expression)]
    if not members or any(m is None for m in members):
        return None
    info = registry.types()
    out: list[tuple[str, str]] = []
    for steps in members:
        assert steps is not None
        path, el_path, type_code = resource_type, resource_type, resource_type
        for step in steps:
            if step.kind == "name":
                kids = info.children(path)
                el = kids.get(step.arg)
                if el is None:
                    el = kids.get(step.arg + "[x]")
                    if el is None:
                        return None
                    type_code = ""
                else:
                    type_code = el.types[0] if len(el.types) == 1 else ""
                el_path = el.path
                path = info.node_path(el, type_code) if type_code else ""
                if not path:
                    break
            elif step.kind == "type":
                type_code = step.arg
        out.append((el_path, type_code))
    return tuple(out)


@lru_cache(maxsize=8192)
def top_level_keys(expression: str, resource_type: str) -> frozenset[str] | None:
    """The JSON properties of the resource an expression can read values from (None: any).

    A resource holding none of them has no value for the expression, so indexing can skip
    it without evaluating anything."""
    members = [_parse_member(m, resource_type) for m in split_union(expression)]
    if not members or any(m is None for m in members):
        return None
    kids = registry.types().children(resource_type)
    keys: set[str] = set()
    for steps in members:
        assert steps is not None
        first = next((s for s in steps if s.kind in ("name", "extension")), None)
        if first is None:
            return None
        if first.kind == "extension":
            keys.add("extension")
            continue
        el = kids.get(first.arg)
        if el is not None:
            keys.add(first.arg)
            continue
        choice = kids.get(first.arg + "[x]")
        if choice is None:
            return None
        keys.update(first.arg + t[0].upper() + t[1:] for t in choice.types)
    return frozenset(keys)
