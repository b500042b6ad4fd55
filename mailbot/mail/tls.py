"""The one place where mailbot decides how it trusts a server: IMAP and SMTP alike.

Certificates are verified, host name included, unless a server's configuration says
``verify_certificate: false``; ``ca_file`` names a private CA (the prefecture's own PKI)
to trust instead of the system's store.

A context is built once per process for each (CA file, verification) and the state of the
files it read (issue 14, point 9): loading the system's store costs ~30 ms of CPU, and
``poll`` connects to IMAP and to SMTP, a worker again at each reconnection. A CA file or a
system store changed on disk (renewed, ``update-ca-certificates``) is another key: the next
connection reads it again, as before.
"""

from __future__ import annotations

import os
import ssl
import threading

from mailbot.config import ServerConfig

_contexts: dict[tuple[object, ...], ssl.SSLContext] = {}
_lock = threading.Lock()


def client_context(config: ServerConfig) -> ssl.SSLContext:
    """A client-side context for ``config``; OSError/ssl.SSLError if ``ca_file`` is unusable.

    Callers build it while connecting, inside their error translation, so an unreadable CA
    file is reported like any other connection failure (MailboxError, DeliveryError). The
    context is shared: callers only wrap sockets with it, never change its settings.
    """
    cafile = str(config.ca_file) if config.ca_file else None
    key = (cafile, config.verify_certificate, _files_state(cafile))
    with _lock:
        context = _contexts.get(key)
        if context is None:
            context = _contexts[key] = _new_context(cafile, config.verify_certificate)
    return context


def _new_context(cafile: str | None, verify: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if verify:
        context.check_hostname = True
        context.verify_mode = ssl.CERT_REQUIRED
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _files_state(cafile: str | None) -> tuple[object, ...]:
    """What a context read from disk, as stat results: the CA file, or the system's store
    (OpenSSL's default file and directory, as ``SSL_CERT_FILE``/``SSL_CERT_DIR`` name them).
    A missing file is ``None`` here; building the context then reports it."""
    if cafile is not None:
        paths: tuple[str | None, ...] = (cafile,)
    else:
        found = ssl.get_default_verify_paths()
        paths = (found.cafile, found.capath)
    return tuple(_stat(path) for path in paths)


def _stat(path: str | None) -> tuple[int, int, int] | None:
    if path is None:
        return None
    try:
        found = os.stat(path)
    except OSError:
        return None
    return (found.st_ino, found.st_size, found.st_mtime_ns)
