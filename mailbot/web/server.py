"""Serving the console with uvicorn: in the foreground (``mailbot web``) or in a thread
beside the worker (``mailbot run`` with ``web.enabled``, ``mailbot demo --web``)."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time

import uvicorn
from starlette.types import ASGIApp

from mailbot.config import WebConfig
from mailbot.errors import MailbotError

log = logging.getLogger(__name__)


def uvicorn_config(app: ASGIApp, web: WebConfig) -> uvicorn.Config:
    """Proxy headers are believed only from the configured reverse proxies."""
    return uvicorn.Config(
        app,
        host=web.host,
        port=web.port,
        log_level="warning",
        access_log=False,  # paths can carry message references: no access log by default
        proxy_headers=bool(web.trusted_proxies),
        forwarded_allow_ips=list(web.trusted_proxies) or None,
        server_header=False,
        lifespan="off",
    )


def bind(host: str, port: int) -> socket.socket:
    """A listening socket; port 0 picks a free one (tests, the demo)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise MailbotError(f"web: cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def serve(app: ASGIApp, web: WebConfig, sock: socket.socket | None = None) -> None:
    """Serve until SIGINT/SIGTERM (uvicorn handles the signals in the main thread), on
    ``sock`` if given (bound beforehand, e.g. on port 0)."""
    sock = sock or bind(web.host, web.port)
    log.info("web console listening", extra={"url": web.base_url})
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises the Ctrl-C it handled
        uvicorn.Server(uvicorn_config(app, web)).run(sockets=[sock])


class BackgroundServer:
    """The console in a daemon thread: ``start()`` returns once it accepts connections,
    ``stop()`` lets requests in flight finish."""

    def __init__(self, app: ASGIApp, web: WebConfig, sock: socket.socket | None = None) -> None:
        self.sock = sock or bind(web.host, web.port)
        self.port: int = self.sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn_config(app, web))
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, name="web", daemon=True
        )

    def start(self, timeout: float = 10.0) -> BackgroundServer:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise MailbotError("web: the console did not start")
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        self.sock.close()


def start_in_thread(app: ASGIApp, web: WebConfig) -> BackgroundServer:
    """For ``mailbot run``: the console beside the worker, on web.host:web.port."""
    server = BackgroundServer(app, web).start()
    log.info("web console listening", extra={"url": web.base_url})
    return server
