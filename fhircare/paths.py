"""Where the project's knowledge files live: `profiles/` (FHIR JSON) and `mappings/` (YAML).

Looked up in this order: the FHIRCARE_PROFILES / FHIRCARE_MAPPINGS environment variables,
the source tree (an editable install), then `<prefix>/share/fhircare/` (a wheel install).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

SOURCE_ROOT = Path(__file__).resolve().parent.parent


def _find(name: str, env: str) -> Path:
    override = os.environ.get(env)
    if override:
        return Path(override)
    for base in (SOURCE_ROOT, Path(sys.prefix) / "share" / "fhircare"):
        if (base / name).is_dir():
            return base / name
    return SOURCE_ROOT / name


def profiles_dir() -> Path:
    return _find("profiles", "FHIRCARE_PROFILES")


def mappings_dir() -> Path:
    return _find("mappings", "FHIRCARE_MAPPINGS")
