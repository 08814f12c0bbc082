"""Patient state store: `open_store(url)` builds the SQLite or PostgreSQL store behind the port of base.py."""

from __future__ import annotations

from service.store.base import Merge, Store, StoredResult, StoreError, StoreTx, Upserted

__all__ = ["Merge", "Store", "StoreError", "StoreTx", "StoredResult", "Upserted", "open_store"]


def open_store(url: str) -> Store:
    """Open (creating and migrating the schema) the store at `url`: sqlite:///path or postgresql://… (DSN).

    ValueError for an unknown scheme or a malformed URL; StoreError when the database cannot be opened.
    """
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "sqlite":
        from service.store.sqlite import SqliteStore, sqlite_path

        return SqliteStore(sqlite_path(url))
    if scheme in ("postgresql", "postgres"):
        from service.store.postgres import PostgresStore

        return PostgresStore(url)
    raise ValueError(
        f"unsupported store URL scheme {scheme!r}: use sqlite:///path/to/file.db or postgresql://user@host/db"
    )
