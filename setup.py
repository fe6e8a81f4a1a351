"""Packaging beyond pyproject.toml: the top-level `profiles/` and `mappings/` folders ship
inside the package as `fhircare.profiles` and `fhircare.mappings` (package data), for the
wheel and the editable install alike, and so does the built web app (`fhircare/webapp/`,
written by `scripts/build-app`). Everything else is in pyproject.toml."""

from setuptools import find_namespace_packages, setup

KNOWLEDGE = {"fhircare.profiles": "profiles", "fhircare.mappings": "mappings"}

setup(
    packages=find_namespace_packages(
        include=["fhircare", "fhircare.*"], exclude=["*.__pycache__", "fhircare.webapp.*"]
    )
    + list(KNOWLEDGE),
    package_dir=KNOWLEDGE,
    package_data={
        "fhircare.profiles": ["*.json", "views/*.json"],
        "fhircare.mappings": ["*.yaml"],
        "fhircare.webapp": ["**/*"],
        # the FHIR R4 registry derived from hl7.fhir.r4.core 4.0.1 (CC0; fhircare/fhir/r4/)
        "fhircare.fhir": ["r4/*.json.gz", "r4/README.md"],
    },
)
