"""The note that goes with a citizen's mail transferred to the competent service: what it
is, by when the citizen expects an answer, and how to answer so that the reply is tracked.
The forward itself is built by ``mailbot.mail.compose.build_forward``."""

from __future__ import annotations

from functools import lru_cache

from mailbot.core.plaintext import WIDTH, one_line, wrap


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
) -> str:
    """The note to the service, in lines of at most 78 characters (addresses kept whole).

    ``transferred_by`` and ``reason`` say who sent it on and why, when an agent did."""
    by = f", au plus tard le {deadline}" if deadline else ""
    dates = (received_at, deadline or "")
    steps = [
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
    blocks = [
        ["Bonjour,"],
        _paragraph(
            f"Le message ci-joint, reçu le {received_at} sur {mailbox_address}, relève de "
            f"{service_name}. Il vous est transmis par mailbot.",
            keep=dates,
        ),
        [f"Référence : {reference}", f"Catégorie : {category}", f"Usager : {citizen}"],
        *(
            [_paragraph(f"Transmis par {one_line(transferred_by)} : {one_line(reason or '')}")]
            if transferred_by
            else []
        ),
        _paragraph(
            "L'usager a été informé de cette transmission et attend votre réponse dans un "
            f"délai de 5 jours ouvrés à compter de la réception{by}.",
            keep=dates,
        ),
        ["Pour répondre :", *(line for step in steps for line in _paragraph(step, "  "))],
        _paragraph(
            f"Si ce message ne relève pas de votre service, renvoyez-le à {mailbox_address} "
            "en gardant la référence dans l'objet."
        ),
    ]
    return "\n\n".join("\n".join(block) for block in blocks) + "\n"


def _paragraph(text: str, hanging: str = "", keep: tuple[str, ...] = ()) -> list[str]:
    """``text`` wrapped. One that fits on a line as it is (printable, single spaces, none at
    its ends) is that line: what ``wrap`` gives, without its tenth of a millisecond. The
    others are mostly the same from mail to mail (the steps, the deadline of the day, the
    last paragraph): wrapped once."""
    fits = text and len(text) <= WIDTH and text.isprintable() and "  " not in text
    if fits and text.strip(" ") == text:
        return [text]
    return list(_wrapped(text, hanging, keep))


@lru_cache(maxsize=1024)
def _wrapped(text: str, hanging: str, keep: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(wrap(text, WIDTH, subsequent_indent=hanging, keep=keep))
