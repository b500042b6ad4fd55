"""Search text folded to case and accents: « ÉCHANGE », « échange » and « echange » are one.

The console's queue search compares the folded subject stored with each message
(``messages.subject_search``) with the folded words typed. Folding in Python, once, when
the row is written, gives SQLite and PostgreSQL the same answer: SQLite's ``lower()`` folds
ASCII only, PostgreSQL's folds by the database's locale (ASCII only in ``C``) and neither
drops accents without an extension (``unaccent``, which needs rights to install). Changing
``search_fold`` changes what the stored values mean: a migration must fold them again.
"""

from __future__ import annotations

import unicodedata


def search_fold(text: str) -> str:
    """``text`` without case (``casefold``: ß is ss) nor accents (compatibility-decomposed,
    its combining marks dropped: é is e, ﬁ is fi)."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(char for char in decomposed if not unicodedata.combining(char))
