"""How a citizen was answered outside mail (``mailbot answered --how``, the console's form).

An enum of its own, in the core, so that the command line can offer its values without
importing the use case (and the database) behind it.
"""

from __future__ import annotations

from enum import StrEnum


class AnsweredHow(StrEnum):
    """How the citizen was answered."""

    PHONE = "phone"
    COUNTER = "counter"
    LETTER = "letter"
