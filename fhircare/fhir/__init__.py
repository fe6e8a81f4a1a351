"""FHIR plumbing: parsing, validation, OperationOutcome errors, search, references."""
