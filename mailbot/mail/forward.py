"""The note that goes with a citizen's mail transferred to the competent service: what it
is, by when the citizen expects an answer, and how to answer so that the reply is tracked.
The forward itself is built by ``mailbot.mail.forward_mail.build_forward``.

A mail too large to be read whole (``polling.max_message_bytes``) is forwarded with its
header alone: the note says so first, with the mail's real size and where the whole of it
is, so that the service never takes a header for the request nor waits for attachments
that will not come."""

from __future__ import annotations

from functools import lru_cache

from mailbot.core.articles import of_service
from mailbot.core.plaintext import WIDTH, columns, one_line, wrap


def cover_note(
    *,
    reference: str,
    received_at: str,
    service_name: str,
    citizen: str,
    mailbox_address: str,
    category: str,
    tracking_address: str | None,
    deadline: str | None = None,
    transferred_by: str | None = None,
    reason: str | None = None,
    too_large: int | None = None,
    console_link: str | None = None,
    deadline_passed: bool = False,
    service_article: str | None = None,
) -> str:
    """The note to the service, in lines of at most 78 characters (addresses kept whole).

    ``transferred_by`` and ``reason`` say who sent it on and why, when an agent did.
    ``too_large``: the mail's size in octets when it was too large to be forwarded whole
    (its header alone is attached); ``console_link``, the address of its page in the
    console, is then given too. Without them, the note is the one it always was.
    ``deadline_passed``: the deadline was already gone by when the mail was sent on (an
    agent's late transfer): the note says so, never « au plus tard le » a day gone by, as
    the citizen's notice says it has passed (B6).

    The service is named with its article (``core.articles.of_service``; ``service_article``
    rules.yaml's), and who sent it on once: mailbot (the routing) or the agent."""
    dates = (received_at, deadline or "")
    steps = _how_to_answer(citizen, reference, tracking_address)
    what = "Le message ci-joint" if too_large is None else "Le message de l'usager"
    blocks = [
        ["Bonjour,"],
        _paragraph(
            f"{what}, reçu le {received_at} sur {mailbox_address}, relève "
            f"{of_service(service_name, service_article)}. Il vous est transmis par "
            f"{one_line(transferred_by) if transferred_by else 'mailbot'}.",
            keep=dates,
        ),
        *(
            _not_whole(too_large, reference, mailbox_address, console_link)
            if too_large is not None
            else []
        ),
        [f"Référence : {reference}", f"Catégorie : {category}", f"Usager : {citizen}"],
        *(
            [_paragraph(f"Motif de la transmission : {one_line(reason or '')}")]
            if transferred_by
            else []
        ),
        _deadline(deadline, deadline_passed, dates),
        ["Pour répondre :", *(line for step in steps for line in _paragraph(step, "  "))],
        _paragraph(
            f"Si ce message ne relève pas de votre service, renvoyez-le à {mailbox_address} "
            "en gardant la référence dans l'objet."
        ),
    ]
    return "\n\n".join("\n".join(block) for block in blocks) + "\n"


def _deadline(deadline: str | None, passed: bool, dates: tuple[str, ...]) -> list[str]:
    """What the citizen expects: an answer by the deadline, or, once it has gone by (an
    agent's late transfer), as soon as possible."""
    if passed and deadline:
        return _paragraph(
            "L'usager a été informé de cette transmission et attend votre réponse. Le délai "
            f"de 5 jours ouvrés à compter de la réception a pris fin le {deadline} : "
            "répondez-lui dès que possible.",
            keep=dates,
        )
    by = f", au plus tard le {deadline}" if deadline else ""
    return _paragraph(
        "L'usager a été informé de cette transmission et attend votre réponse dans un "
        f"délai de 5 jours ouvrés à compter de la réception{by}.",
        keep=dates,
    )


def _how_to_answer(citizen: str, reference: str, tracking_address: str | None) -> list[str]:
    """The note's steps for the service's answer: to the citizen, the reference kept, the
    tracking address in Bcc (the answer then counts in the indicators), a full signature."""
    return [
        f"- répondez directement à l'usager ({citizen}) ;",
        f"- gardez la référence [{reference}] dans l'objet ;",
        *(
            [
                f"- mettez {tracking_address} en copie cachée (Cci) : la réponse est alors "
                "comptée dans les délais de réponse de la préfecture ;"
            ]
            if tracking_address
            else []
        ),
        "- signez avec votre prénom, nom, fonction, service et coordonnées.",
    ]


def size_fr(octets: int) -> str:
    """A mail's size as a French reader reads it: "31,5 Mo", "740 ko"."""
    if octets >= 1_000_000:
        return f"{octets / 1_000_000:.1f}".replace(".", ",") + " Mo"
    return f"{max(1, round(octets / 1000))} ko"


def _not_whole(
    size: int, reference: str, mailbox_address: str, console_link: str | None
) -> list[list[str]]:
    """What the service must know of a mail forwarded with its header alone: that it is
    not the whole mail, why, and where the whole mail is (the link on a line of its own,
    never cut)."""
    size_text = size_fr(size)
    blocks = [
        _paragraph(
            f"Attention : ce message ({size_text}) est trop volumineux pour vous être transmis "
            "en entier. Seul son en-tête (expéditeur, date, objet) est joint : son texte et "
            "ses éventuelles pièces jointes ne le sont pas. Le message complet est dans la boîte "
            f"{mailbox_address}, sous la référence {reference}.",
            keep=(size_text,),
        )
    ]
    if console_link:
        blocks.append(["Sa fiche dans la console de mailbot :", console_link])
    return blocks


def _paragraph(text: str, hanging: str = "", keep: tuple[str, ...] = ()) -> list[str]:
    """``text`` wrapped. One that fits on a line as it is (printable, single spaces, none at
    its ends) is that line: what ``wrap`` gives, without its tenth of a millisecond. The
    others are mostly the same from mail to mail (the steps, the deadline of the day, the
    last paragraph): wrapped once."""
    fits = text and columns(text) <= WIDTH and text.isprintable() and "  " not in text
    if fits and text.strip(" ") == text:
        return [text]
    return list(_wrapped(text, hanging, keep))


@lru_cache(maxsize=1024)
def _wrapped(text: str, hanging: str, keep: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(wrap(text, WIDTH, subsequent_indent=hanging, keep=keep))
