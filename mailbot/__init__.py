"""mailbot: acknowledgement, routing and response-time tracking for a prefecture's shared mailboxes."""

__version__ = "0.1.0"
