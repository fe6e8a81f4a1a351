"""Knowledge artifacts shipped with fhircare: FHIR JSON in `profiles/`, YAML in `mappings/`.

Both folders are found by `fhircare.paths` (environment, source tree, or the installed
share folder). Loaded once and cached; callers get deep copies so a caller's edits never
leak into the cache.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from fhircare.paths import mappings_dir, profiles_dir

PROFILES_DIR = profiles_dir()
MAPPINGS_DIR = mappings_dir()


@cache
def _profiles(folder: Path) -> tuple[dict[str, Any], ...]:
    out = []
    for path in sorted(folder.glob("*.json")):
        with path.open(encoding="utf-8") as fh:
            resource = json.load(fh)
        expected = f"{resource.get('resourceType')}-{resource.get('id')}.json"
        if path.name != expected:
            raise ValueError(f"{path.name}: file name must be {expected}")
        out.append(resource)
    return tuple(out)


def load_profiles_dir(folder: Path | None = None) -> list[dict[str, Any]]:
    """Every FHIR resource in `profiles/` (one per `<ResourceType>-<id>.json` file)."""
    return copy.deepcopy(list(_profiles(folder or PROFILES_DIR)))


def definition(resource_type: str, id: str) -> dict[str, Any] | None:
    """One resource of `profiles/` by type and id, or None."""
    for resource in _profiles(PROFILES_DIR):
        if resource.get("resourceType") == resource_type and resource.get("id") == id:
            return copy.deepcopy(resource)
    return None


def by_url(url: str) -> dict[str, Any] | None:
    """A canonical resource of `profiles/` by `url` (an optional `|version` must match)."""
    base, _, version = url.partition("|")
    for resource in _profiles(PROFILES_DIR):
        if resource.get("url") == base and (not version or resource.get("version") == version):
            return copy.deepcopy(resource)
    return None


@cache
def _mapping(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as fh:
        data = yaml.safe_load(fh)
    if not isinstance(data, dict):
        raise ValueError(f"{path.name}: a mapping file must hold a YAML mapping")
    return data


def mapping(name: str) -> dict[str, Any]:
    """The YAML mapping `mappings/<name>.yaml` (name without the extension)."""
    path = MAPPINGS_DIR / f"{name.removesuffix('.yaml')}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"No mapping file mappings/{path.name}")
    return copy.deepcopy(_mapping(path))


def clear_cache() -> None:
    """Forget loaded files (after editing them at runtime, and in tests)."""
    _profiles.cache_clear()
    _mapping.cache_clear()
