"""Transitions of care: discharge intake (FHIR and HL7 v2), medication reconciliation, follow-up."""
