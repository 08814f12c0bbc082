"""HTTP entrypoints (FastAPI). Routes parse, call the use case and map errors to HTTP."""
