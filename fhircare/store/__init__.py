"""Storage: the Store protocol and its backends (embedded TinyDB, remote FHIR server)."""

from fhircare.store.base import Change, Store, WriteOp, WriteResult

__all__ = ["Change", "Store", "WriteOp", "WriteResult"]
