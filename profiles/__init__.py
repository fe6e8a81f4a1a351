"""FHIR knowledge artifacts shipped as package data (read through fhircare.paths)."""
