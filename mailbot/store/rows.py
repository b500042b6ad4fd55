"""The base of the ``Transaction``'s parts (``store/*_rows``, ``store/message_lookups``,
``store/outbox_recovery``): each is a mixin of the methods on one table or concept, and
this says what they share, so that each type-checks alone and ``Transaction`` (in
``store/transaction``) only puts them together."""

from __future__ import annotations

from sqlalchemy.engine import Connection


class Rows:
    """The connection a ``Transaction`` writes on, in its transaction (set by its
    ``__init__``): all that every part reads. A part's own state is declared in it
    (``FolderRows.fence``, also set by ``Transaction.__init__``); a part that calls another's
    methods derives from it (``MessageRows`` from ``EventRows``: a reply's events). The
    parts call no private method of one another."""

    conn: Connection
