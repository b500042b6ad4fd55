"""The agents' web console: login (ProConnect or local accounts), authorisation, DSFR pages.

``create_app`` (app.py) builds the ASGI application; ``server`` runs it (``mailbot web``, or
in a thread beside ``mailbot run``). Pages call the application layer; nothing here talks to
a mail server.
"""
