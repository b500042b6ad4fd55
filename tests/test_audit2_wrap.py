"""Audit 2: French typography in the plain-text parts. The space before « : ; ! ? % » does
not break: the weekly report's summary began a line with « : 40,0 % (objectif > 75 %) »."""

from __future__ import annotations

import re

from mailbot.core.plaintext import wrap


def test_wrap_never_breaks_before_a_double_punctuation_mark() -> None:
    text = (
        "6 messages reçus, 3 répondus, 2 en retard. Réponses dans les 5 jours ouvrés : 40,0 %"
        " (objectif > 75 %). Cherchez France Services sur le site ; merci ! Ou bien ?"
    )
    for width in range(20, 90):
        for line in wrap(text, width):
            assert not re.match(r"[:;!?%]", line), (width, line)
        assert " ".join(wrap(text, width)) == text
