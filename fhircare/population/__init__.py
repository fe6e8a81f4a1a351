"""Population scale: panel-wide case finding on Spark over Bulk Data ndjson, with the same
rule definitions as the per-patient endpoints (mappings/case-finding.yaml)."""
