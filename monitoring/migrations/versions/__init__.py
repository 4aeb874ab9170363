"""One revision per schema change, oldest first; :data:`monitoring.schema.REVISIONS` lists them (a test checks)."""
