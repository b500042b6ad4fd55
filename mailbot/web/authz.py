"""Who may do what in the console: the core's permission table, as the web layer reads it.

The policy itself lives in ``mailbot/core/permissions.py`` (pure, no I/O) so that the use
cases apply the very same table whichever face calls them; the middleware and the pages
ask ``allowed`` on every request through the names re-exported here.
"""

from __future__ import annotations

from mailbot.core.permissions import (
    POLICY,
    SERVICE_SCOPED,
    Action,
    Reach,
    Role,
    allowed,
    services_for,
)

__all__ = ["POLICY", "SERVICE_SCOPED", "Action", "Reach", "Role", "allowed", "services_for"]
