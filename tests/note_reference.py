"""FROZEN COPY of ``cover_note`` (mailbot/mail/forward.py) as it was at acdb9d6, every
paragraph through ``plaintext.wrap``: the reference tests/test_forward.py holds the note's
shortcuts to. Do not change it. (Changed on purpose once, audit2b: the service named with
its contracted article, the agent who transferred it named in the first paragraph, the
reason line « Motif de la transmission ».)"""

from __future__ import annotations

from mailbot.core.articles import of_service
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
            f"Le message ci-joint, reçu le {received_at} sur {mailbox_address}, relève "
            f"{of_service(service_name)}. Il vous est transmis par "
            f"{one_line(transferred_by) if transferred_by else 'mailbot'}.",
            keep=dates,
        ),
        [f"Référence : {reference}", f"Catégorie : {category}", f"Usager : {citizen}"],
        *(
            [_paragraph(f"Motif de la transmission : {one_line(reason or '')}")]
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
    return wrap(text, WIDTH, subsequent_indent=hanging, keep=keep)
