"""Enforce the project's own profiles on writes that claim them (`meta.profile`).

A resource that says it conforms to a fhircare StructureDefinition must have the elements
the profile requires (differential `min` >= 1) and satisfy its error-severity invariants,
evaluated with FHIRPath (fhirpathpy). Profiles of other publishers are left to a full
validator (the HAPI conformance check).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any

from fhirpathpy import evaluate
from fhirpathpy.models import models

from fhircare.fhir.errors import Unprocessable


@dataclass(frozen=True)
class Rule:
    path: str  # e.g. "Task.code" or "CareTeam.participant.role"
    kind: str  # "min" | "constraint"
    key: str = ""
    expression: str = ""
    human: str = ""


@cache
def _rules() -> dict[str, tuple[str, tuple[Rule, ...]]]:
    """profile url -> (resource type, rules), from the StructureDefinitions in profiles/."""
    from fhircare.care.definitions import load_profiles_dir

    out: dict[str, tuple[str, tuple[Rule, ...]]] = {}
    for sd in load_profiles_dir():
        if sd.get("resourceType") != "StructureDefinition":
            continue
        rules: list[Rule] = []
        for element in (sd.get("differential") or {}).get("element") or []:
            path = element.get("path", "")
            if element.get("min", 0) >= 1 and "." in path and ":" not in element.get("id", ""):
                rules.append(Rule(path, "min"))
            for c in element.get("constraint") or []:
                if c.get("severity") == "error" and c.get("expression"):
                    rules.append(
                        Rule(
                            path,
                            "constraint",
                            c.get("key", ""),
                            c["expression"],
                            c.get("human", ""),
                        )
                    )
        out[sd["url"]] = (sd["type"], tuple(rules))
    return out


def values_at(resource: dict[str, Any], path: str) -> Iterator[Any]:
    """Every value at a dotted path, flattening lists at each step."""
    current: list[Any] = [resource]
    for part in path.split("."):
        nxt: list[Any] = []
        for item in current:
            if isinstance(item, dict) and part in item:
                value = item[part]
                nxt.extend(value if isinstance(value, list) else [value])
        current = nxt
        if not current:
            return
    yield from current


def _present(node: Any, name: str) -> bool:
    if name.endswith("[x]"):
        stem = name[:-3]
        return any(k.startswith(stem) and k[len(stem) :][:1].isupper() for k in node)
    return node.get(name) not in (None, [], {}, "")


def problems(resource: dict[str, Any]) -> list[tuple[str, str]]:
    """(expression, message) for each rule of a claimed fhircare profile that fails."""
    out: list[tuple[str, str]] = []
    rules = _rules()
    for url in (resource.get("meta") or {}).get("profile") or []:
        if url.split("|")[0] not in rules:
            continue
        rtype, profile_rules = rules[url.split("|")[0]]
        if resource.get("resourceType") != rtype:
            out.append((rtype, f"{url} is a profile on {rtype}"))
            continue
        for rule in profile_rules:
            parent_path, _, name = rule.path.rpartition(".")
            parents = (
                [resource]
                if "." not in rule.path or parent_path == rtype
                else list(values_at(resource, parent_path.split(".", 1)[1]))
            )
            if rule.kind == "min":
                if not all(isinstance(p, dict) and _present(p, name) for p in parents):
                    out.append((rule.path, f"{rule.path} is required by {url}"))
                continue
            nodes = (
                parents
                if "." not in rule.path
                else [v for p in parents if isinstance(p, dict) for v in values_at(p, name)]
            )
            for node in nodes:
                try:
                    result = evaluate(node, rule.expression, [], models["r4"])
                except Exception:  # an unevaluable invariant is a defect of ours, not theirs
                    continue
                if result != [True]:
                    out.append(
                        (
                            rule.path,
                            f"{rule.key} failed: {rule.human or rule.expression}"
                            f" (required by {url})",
                        )
                    )
    return out


def check_claimed_profiles(resource: dict[str, Any]) -> None:
    """Raise Unprocessable when a resource does not meet a fhircare profile it claims."""
    found = problems(resource)
    if found:
        first_path, first = found[0]
        raise Unprocessable(
            first,
            expression=[first_path],
            issues=[
                {"severity": "error", "code": "invariant", "diagnostics": m, "expression": [p]}
                for p, m in found[1:20]
            ],
        )
