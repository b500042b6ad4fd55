"""The console while the database refuses writes or cannot be reached (a failover, a
maintenance): what an agent is told, and the one log line IT reads.

PostgreSQL turned read-only (SQLSTATE 25006: a standby, ``default_transaction_read_only``)
still answers every read, so the pages that read go on (the presence a page view records
is skipped: ``app/presence.opened``). An action, a login or a logout that must write is
refused whole by the database: nothing was recorded, and an action queues its mail in the
transaction that records it, so nothing was sent either. The agent is told so in French
(HTTP 503), on the page they were on when it can be shown again (its form still filled
in), else on the error page. A database that cannot be reached (connection refused, lost)
or another transient refusal (``store/errors``: a deadlock, a lock timeout) is told apart:
an action may then have been recorded just before the connection went, so the page does
not say that nothing was. Each refusal is one WARNING with the driver's code in a few
words (``reason``), never a traceback: it is the database's state, not the console's bug."""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import HTMLResponse

from mailbot.store.errors import is_read_only, transient_reason
from mailbot.web.pages import render

log = logging.getLogger(__name__)

TITLE = "Service momentanément indisponible"
READ_ONLY = "La base de données n'accepte pas d'enregistrement pour le moment (maintenance)"
UNAVAILABLE = "La base de données est indisponible pour le moment (maintenance ou panne)"
RETRY = "Réessayez dans quelques minutes"
LASTS = "si cela dure, signalez-le à l'administrateur de mailbot"
RETRY_AFTER = "120"  # seconds: a failover or a short maintenance
FORM_TYPE = "application/x-www-form-urlencoded"  # the console's forms
DRAFT_FIELDS = ("texte_modifie", "texte")  # a reply's edited text, a free reply's text
DRAFT_BODY_LIMIT = 1_000_000  # bytes of a request kept for its draft, at most
MAX_FIELDS = 1000  # as Starlette's form parser


@dataclass(frozen=True)
class Refusal:
    """The database refused the request's work for a while: ``read_only`` (it answers
    reads, refuses every write) or unavailable; ``reason`` in a few words for the log."""

    read_only: bool
    reason: str

    @property
    def state(self) -> str:
        """The database's state as the agent reads it."""
        return READ_ONLY if self.read_only else UNAVAILABLE


def refusal(exc: BaseException) -> Refusal | None:
    """The database's refusal behind ``exc`` (its chain included), None for any other
    error (a bug stays the 500 page and its ERROR line)."""
    reason = transient_reason(exc)
    if reason is None:
        return None
    return Refusal(is_read_only(exc), reason)


def nothing_done(refused: Refusal) -> str:
    """An action refused whole, as its page knows (one transaction, refused read-only):
    what the agent is told in the page's error alert."""
    if refused.read_only:
        return f"{READ_ONLY} : rien n'a été envoyé ni enregistré. {RETRY}."
    return maybe_done(refused)


def maybe_done(refused: Refusal) -> str:
    """A request whose work may have been partly recorded, or sent, before the refusal."""
    return (
        f"{refused.state} : votre demande n'a peut-être pas abouti. Vérifiez-le dans quelques"
        f" minutes avant de la refaire ; {LASTS}."
    )


def page_text(refused: Refusal, safe: bool) -> str:
    """The error page's text: a page that could not be read, or a request that reached
    this page uncaught — it may have committed part of its work (an administrator's retry
    records the AR, then delivers), so it is never said to have done nothing."""
    if not safe:
        return maybe_done(refused)
    return f"{refused.state} : la page ne peut pas être affichée. {RETRY} ; {LASTS}."


def login_refused(refused: Refusal) -> str:
    """A login that had to end the session it replaces in the database, and could not."""
    return f"{refused.state} : votre connexion n'a pas pu être enregistrée. {RETRY}."


def logout_unrecorded(refused: Refusal) -> str:
    """A logout: the session is gone from the browser, the database could not note it."""
    return (
        f"Vous êtes déconnecté de ce navigateur. {refused.state} : la fin de votre session n'a"
        " pas pu y être notée."
    )


def draft_of(content_type: str, body: bytes) -> str:
    """The text of a reply in a refused request's form (the edited text, or the free
    reply's), "" when there is none. The error page gives it to copy: a request refused
    at the door (the login wall reads the database before any page) never reaches the
    page that would show its form again, and the browser's Back may not give it back
    (the pages are ``no-store``)."""
    if not content_type.startswith(FORM_TYPE):
        return ""
    form = parse_qs(body.decode("utf-8", "replace"), max_num_fields=MAX_FIELDS)
    for name in DRAFT_FIELDS:
        text = next((value for value in form.get(name, []) if value.strip()), "")
        if text:
            return text
    return ""


def warn(request: Request, refused: Refusal, safe: bool = False) -> None:
    """The log line of a refused request: WARNING, the path and the reason. A page read
    (``safe``: a GET, the presence refresh every open message page makes) is said once a
    minute for one reason, its repeats at DEBUG: thirty agents' open pages wrote thousands
    of lines an hour of one outage. An agent's action refused is a WARNING each time."""
    level = logging.WARNING
    if safe:
        said = _reads_said(request)
        now = time.monotonic()
        with _SAID_LOCK:
            if now - said.get(refused.reason, -math.inf) < SAY_READS_EVERY:
                level = logging.DEBUG
            else:
                said[refused.reason] = now
    log.log(
        level,
        "console request refused by the database",
        extra={"path": request.url.path, "method": request.method, "reason": refused.reason},
    )


SAY_READS_EVERY = 60.0  # seconds between two WARNINGs of page reads refused for one reason
_SAID_LOCK = threading.Lock()


def _reads_said(request: Request) -> dict[str, float]:
    """This console's reasons → when a read refused for it was last a WARNING."""
    state = request.app.state
    with _SAID_LOCK:
        said: dict[str, float] | None = getattr(state, "refused_reads_said", None)
        if said is None:
            said = state.refused_reads_said = {}
    return said


def outage_page(request: Request, message: str, draft: str = "") -> HTMLResponse:
    """The French 503 page, with a Retry-After that tells a proxy or a script when to
    come back; ``draft``, the text of a reply that could not be sent, to copy."""
    context = {"status": 503, "title": TITLE, "message": message, "draft": draft}
    headers = {"retry-after": RETRY_AFTER}
    return render(request, "error.html.j2", context, status_code=503, headers=headers)
