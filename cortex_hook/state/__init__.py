"""The state: priorities, drains, leases and history in SQLite (db.py), its schema and
migrations (schema.py)."""

from .db import BUSY_TIMEOUT_S, State
from .schema import SCHEMA_VERSION

__all__ = ["BUSY_TIMEOUT_S", "SCHEMA_VERSION", "State"]
