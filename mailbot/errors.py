"""The project's own exceptions: callers catch these, never a library's internals."""

from __future__ import annotations

from mailbot.redact import redact


class MailbotError(Exception):
    """Base of every error mailbot raises on purpose.

    ``shown`` is the refusal in French for an agent of the console, where it follows
    « Action impossible : » (a clause: lowercase, ending with a period). The message
    itself stays in English: the CLI, the logs and the tests read it. None (the default)
    when no French text was written: the console then shows the message as it is.
    """

    shown: str | None = None

    def __init__(self, *args: object, shown: str | None = None) -> None:
        super().__init__(*args)
        self.shown = shown


class ConfigError(MailbotError):
    """A configuration file is unreadable or does not match the expected shape.

    The message always names the file, the key path and what was expected, so that
    whoever edits rules.yaml can fix it without reading code.
    """

    def __init__(self, file: str, key: str, expected: str, *, shown: str | None = None) -> None:
        self.file = file
        self.key = key
        self.expected = expected
        where = f"{file}: {key}" if key else file
        super().__init__(f"{where}: {expected}", shown=shown)


class ScheduleError(MailbotError, ValueError):
    """A schedule in rules.yaml (a time, a weekly cron) cannot be understood.

    Also a ValueError, so that configuration validation reports it at its key path.
    """


class SecretError(MailbotError):
    """A secret could not be read. The message names where it was looked for, never its value."""


class MessageError(MailbotError):
    """A message could not be understood well enough to be processed."""


class AttachmentUnavailable(MessageError):
    """An attachment of a mail read only in part that the console will not serve: larger
    than ``web.max_attachment_bytes`` (``too_large``), or not obtainable whole from the
    server (``incomplete``). Cut bytes are never served as the citizen's document."""

    def __init__(self, message: str, *, reason: str, size: int = 0) -> None:
        super().__init__(message)
        self.reason = reason  # "too_large" or "incomplete"
        self.size = size  # octets of the part as stored (encoded), when known


class StoreError(MailbotError):
    """The database refused an operation or is at an unexpected schema version."""


class TransientStoreError(StoreError):
    """The database could not do it *now* (locked, a serialization failure or a deadlock,
    a timeout, the connection lost in a failover: ``mailbot.store.errors``). Nothing of the
    work was committed, and the same work done again later is expected to succeed: a poll
    that meets it fails and its mail is read again, never quarantined for it. The message
    names the mailbox and folder (or the row) and what happened, never a citizen's address."""


class DeliveryError(MailbotError):
    """Sending mail failed.

    ``permanent`` tells a 5xx (do not retry) from a 4xx or network error (retry later).
    ``uncertain`` marks a send that failed after the terminating "." of DATA had left: the
    server may have accepted it, so retrying could mean a second AR (internal mail is
    retried all the same: app/delivery). ``interrupted`` marks
    a send stopped by a shutdown before that point: nothing left, it stays queued as is.
    The message is redacted (mailbot.redact): it is logged and stored.
    """

    def __init__(
        self,
        message: str,
        *,
        permanent: bool,
        code: int | None = None,
        uncertain: bool = False,
        interrupted: bool = False,
    ) -> None:
        super().__init__(redact(message))  # a server's reply may echo a password
        self.permanent = permanent
        self.code = code
        self.uncertain = uncertain
        self.interrupted = interrupted


class ForbiddenRecipientError(DeliveryError):
    """An outgoing mail was addressed to someone mailbot may not write to."""

    def __init__(self, address: str) -> None:
        super().__init__(f"refusing to send to unauthorised recipient {address!r}", permanent=True)


class FirstPollError(MailbotError):
    """A folder the database has never seen already holds mail: acknowledging it all could
    answer months-old mail (or a wrong, empty database is in use). Nothing was done."""


class MailboxError(MailbotError):
    """The IMAP server could not be reached or refused an operation.

    The message is redacted (mailbot.redact): a server's reply may echo the password.
    ``shown``: an agent of the console is told in French, by default that the server did
    not answer (whatever the IMAP detail, it is the administrator's to read in the logs).
    """

    SHOWN = (
        "le serveur de messagerie n'a pas répondu ou a refusé l'opération : réessayez dans un"
        " instant ; si cela dure, signalez-le à l'administrateur de mailbot."
    )

    def __init__(self, message: str, *, shown: str | None = None) -> None:
        super().__init__(redact(message), shown=shown or self.SHOWN)


class UnreadableMailError(MailboxError):
    """The server refuses to read one mail (its FETCH fails, alone, on a fresh connection
    too): the mail is quarantined with the server's answer, and the folder goes on."""


class MailGoneError(MailboxError):
    """A recorded mail is no longer in its mailbox (deleted, or moved where mailbot does
    not look): it cannot be shown, transferred or processed again."""


class TemplateError(MailbotError):
    """A template is missing, broken, or was rendered without a required variable."""


class RequestError(MailbotError):
    """An agent's request (a reply, a transfer, a message answered elsewhere) cannot be done
    as asked: an unknown message or service, an incomplete signature, a missing reason.
    Nothing was queued or recorded; the message says what to change (``shown``: the same
    for an agent, in French)."""

    def __init__(self, what: str, value: str, problem: str, *, shown: str | None = None) -> None:
        self.what = what
        self.value = value
        super().__init__(f"{what}: {value}: {problem}", shown=shown)


class TemplateNotAllowedError(RequestError):
    """A reply with a template its scope (meta.yaml ``scope:``) keeps from the message's
    mailbox or service, or one that is no reply (the transfer notice): refused by the use
    case, whichever face asked (the console offers none of them; ``mailbot reply
    --template`` may name any)."""

    def __init__(self, template: str, service: str, mailbox: str, *, shown: str) -> None:
        self.template = template
        self.service = service
        super().__init__(
            "template",
            template,
            f"not a reply allowed on the service {service}'s mail (mailbox {mailbox})",
            shown=shown,
        )


class SignatureLostError(RequestError):
    """An agent's edit of a standard reply removed elements of their signature (CRPA
    L111-2): the reply is refused, naming them (``missing``: agent.<field> names)."""

    def __init__(self, missing: list[str]) -> None:
        self.missing = missing
        where = ", ".join(f"agent.{name}" for name in missing)
        super().__init__("text", where, "the edited text no longer holds the signature")


class AnsweredMeanwhileError(MailbotError):
    """A reply was recorded on the message (or it was answered or closed otherwise) after
    the state the agent's form showed: their reply is not sent (a collision, shown)."""


class RepeatedRequestError(MailbotError):
    """A request with this idempotency key was already done (a double submit): nothing new."""


class SameMailError(MailbotError):
    """Another mailbox's copy of this very mail was recorded first (a mail To one of our
    mailboxes and Cc another), perhaps by another worker at this very moment: this copy is
    that one's duplicate, never acknowledged again."""


class LeaseLostError(MailbotError):
    """This worker no longer holds the lease of a mailbox folder (it expired while the
    process was paused, or another worker took it over): what it was doing is rolled back,
    and the folder is the new holder's."""


class ClusterError(MailbotError):
    """Running several workers is not possible as configured: a second worker on SQLite, or
    a schema migration while a worker of an older version holds a lease."""
