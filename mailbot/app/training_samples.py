"""The labelled mails routing learns from (``Sample``: a folder's labels.csv, or an agent's
correction), the text a model reads of them, and the hash and order that name a data set."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from mailbot.config import Config
from mailbot.core.classifier import data_hash, model_text
from mailbot.core.facts import routing_input
from mailbot.core.message import parse_message
from mailbot.core.routing import RoutingInput
from mailbot.errors import ConfigError


@dataclass(frozen=True)
class Sample:
    """One labelled mail, as routing sees it."""

    name: str
    facts: RoutingInput
    service: str
    category: str
    reorient: str = ""
    source: str = "labelled"
    # When a citizen's mail was received (an agent's correction, read again from IMAP; the
    # earlier of its INTERNALDATE and its recording, as the purge goes by): set, the mail is
    # a citizen's, dated in the model's header and held to the vocabulary's rule for
    # corrected mail (``app/model_fit._vocabulary``); None for the labelled corpora's invented mail.
    received: datetime | None = None

    @property
    def words(self) -> tuple[list[str], list[str]]:
        return model_text(self.facts.subject, facts_text(self.facts))


def facts_text(facts: RoutingInput) -> Any:
    from mailbot.core.routing_text import RoutingText

    return RoutingText(facts.body, facts.quoted)


def load_labelled(config: Config, folder: Path, source: str = "labelled") -> list[Sample]:
    """The mails of a folder with a labels.csv (file, mailbox, service, category[, reorient])."""
    labels = folder / "labels.csv"
    try:
        with labels.open(encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as exc:
        raise ConfigError(str(labels), "", f"cannot read labels: {exc.strerror}") from None
    samples = []
    for row in rows:
        raw = (folder / row["file"]).read_bytes()
        facts = routing_input(config, row["mailbox"], parse_message(raw))
        samples.append(
            Sample(
                row["file"],
                facts,
                row["service"],
                row["category"],
                row.get("reorient") or "",
                source,
            )
        )
    return samples


def training_hash(samples: Iterable[Sample]) -> str:
    """The hash a model is named by: of all it learns from — each mail's text and mailbox
    (an input of the stacked service regression) and its labels, the re-orientation target
    (the reorient head's) included — in no particular order."""
    return data_hash(
        (
            f"{s.facts.mailbox}\0{s.facts.subject}\n{s.facts.body}\n{s.facts.quoted}",
            f"{s.service}\0{s.reorient}",
            s.category,
        )
        for s in samples
    )


def canonical(samples: Iterable[Sample]) -> list[Sample]:
    """``samples`` in an order that depends on what they are, not where they were read
    (each one's ``training_hash``, then its folder and name): the same data, the same folds."""
    return sorted(samples, key=lambda s: (training_hash([s]), s.source, s.name))
