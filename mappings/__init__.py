"""Mappings and reference tables shipped as package data (read through fhircare.paths)."""
