"""Population scale: Bulk Data export and import, panel-wide case finding on Spark with the
same rule definitions as the per-patient endpoints (mappings/case-finding.yaml)."""
