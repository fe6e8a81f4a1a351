"""Application services: the generic FHIR resource service, Bundles, and the event bus."""
