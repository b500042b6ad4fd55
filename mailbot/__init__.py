"""mailbot: acknowledgement, routing and response times for a prefecture's shared mailboxes."""

__version__ = "0.1.0"
