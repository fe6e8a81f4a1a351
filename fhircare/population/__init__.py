"""Population scale: Bulk Data export and import, panel-wide case finding."""
