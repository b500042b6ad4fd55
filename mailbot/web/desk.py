"""The agents' desk: the queue (home page), the message page, replies and actions. One
list of routes, registered by ``create_app`` before the console's own (the queue is "/")."""

from __future__ import annotations

from mailbot.web import action_pages, message_pages, queue_pages, reply_pages

ROUTES = [*queue_pages.ROUTES, *message_pages.ROUTES, *reply_pages.ROUTES, *action_pages.ROUTES]
