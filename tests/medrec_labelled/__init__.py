"""The project's labelled discharge set for medication reconciliation, and its scorer."""
