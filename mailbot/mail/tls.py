"""The one place where mailbot decides how it trusts a server: IMAP and SMTP alike.

Certificates are verified, host name included, unless a server's configuration says
``verify_certificate: false``; ``ca_file`` names a private CA (the prefecture's own PKI)
to trust instead of the system's store.
"""

from __future__ import annotations

import ssl

from mailbot.config import ServerConfig


def client_context(config: ServerConfig) -> ssl.SSLContext:
    """A client-side context for ``config``; OSError/ssl.SSLError if ``ca_file`` is unusable.

    Callers build it while connecting, inside their error translation, so an unreadable CA
    file is reported like any other connection failure (MailboxError, DeliveryError).
    """
    cafile = str(config.ca_file) if config.ca_file else None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if config.verify_certificate:
        context.check_hostname = True
        context.verify_mode = ssl.CERT_REQUIRED
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
