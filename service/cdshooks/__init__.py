"""CDS Hooks 2.0 service (cds-hooks.md): declarations, request reading, prefetch, draft orders, feedback.

No FastAPI here: `service/api/cds.py` is the HTTP entrypoint; this package is the use case behind it."""
