"""Logs, metrics and request ids: what an operator sees of a running fhircare."""
