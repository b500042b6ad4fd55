"""Persistence: the schema and its migrations, the records, the transaction, the Store.

``store`` persists; what a decision means (a follow-up counts as a relance of its parent,
an AR's outbox status is its AR status) is decided by the use cases in ``mailbot.app``.
"""

from mailbot.core.clock import utcnow
from mailbot.store.database import Store
from mailbot.store.records import FolderState, NewMessage, OutboxItem
from mailbot.store.schema import (
    UNHANDLED_REASONS,
    full_id,
    metadata,
    reference_counter,
    stored_id,
)
from mailbot.store.schema_upgrade import MIGRATIONS
from mailbot.store.transaction import Session, Transaction

__all__ = [
    "MIGRATIONS",
    "UNHANDLED_REASONS",
    "FolderState",
    "NewMessage",
    "OutboxItem",
    "Session",
    "Store",
    "Transaction",
    "full_id",
    "metadata",
    "reference_counter",
    "stored_id",
    "utcnow",
]
