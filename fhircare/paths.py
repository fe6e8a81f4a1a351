"""The one place that finds fhircare's knowledge files: `profiles/` (FHIR JSON) and
`mappings/` (YAML), and the built web app.

Both folders ship inside the package as `fhircare.profiles` and `fhircare.mappings`
(setup.py maps the top-level folders there), so a wheel install and an editable install
find them the same way, through `importlib.resources`. `FHIRCARE_PROFILES` and
`FHIRCARE_MAPPINGS` point at other folders (a site's own tables, tests).
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

PROFILES_ENV = "FHIRCARE_PROFILES"
MAPPINGS_ENV = "FHIRCARE_MAPPINGS"


def _folder(package: str, env: str) -> Path:
    override = os.environ.get(env)
    if override:
        return Path(override)
    found = resources.files(package)
    if not isinstance(found, Path):  # a zipped install: fhircare reads real files
        raise RuntimeError(f"{package} is not installed as a folder; reinstall fhircare")
    return found


def profiles_dir() -> Path:
    """The folder of FHIR resources (StructureDefinitions, PlanDefinitions, ...)."""
    return _folder("fhircare.profiles", PROFILES_ENV)


def webapp_dir() -> Path:
    """The built web app (`scripts/build-app` writes it from `webapp/`), served at /app."""
    return _folder("fhircare.webapp", "FHIRCARE_WEBAPP")


def mappings_dir() -> Path:
    """The folder of YAML mappings and reference tables."""
    return _folder("fhircare.mappings", MAPPINGS_ENV)
