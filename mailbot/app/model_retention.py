"""The routing model against the retention: `mailbot check` and `mailbot status` say when
the configured model learned from agents' corrections of mail older than `retention.days`.

The purge deletes a message and its corrections after `retention.days`; a model trained on
them keeps the hashed ids of their words and what it learned of them until it is trained
again (the corrections of purged mails are gone, so `mailbot routing train` forgets them).
The model's header dates the corrected mails (``core.classifier.corrected_mail``).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from mailbot.config import Config
from mailbot.core.clock import utcnow
from mailbot.errors import ConfigError

RETRAIN = "retrain (`mailbot routing train`) so that the model forgets purged mails"


def model_retention_warnings(
    config: Config, now: datetime | None = None, days: int | None = None
) -> list[str]:
    """One line when the configured routing model learned from corrected mail received
    before the retention's cut-off (``days``, by default retention.days: `mailbot purge
    --days`'s own), or from corrections its header does not date (a model written before
    it dated them: whether they are past the retention cannot be told); nothing for a
    model trained on the labelled corpora alone, or none configured."""
    model = config.routing.model if config.routing is not None else None
    if model is None:
        return []
    # numpy with it: not for the worker's start, whose routing helper reads the model.
    from mailbot.core.classifier import corrected_mail, header

    days = config.retention.days if days is None else days
    try:
        said = corrected_mail(header(model.file))
    except ConfigError as exc:  # the worker refuses to start on it; said here all the same
        return [f"routing.model.file: {exc}; cannot tell whether it holds purged mails"]
    if said is None:
        return []
    name = f"routing.model.file {model.file.name}"
    if said.oldest is None:
        return [
            f"{name} was trained on {said.mails} corrections of citizens' mail not dated in"
            f" its header (written before headers dated them): it may hold mail older than"
            f" the retention ({days} days); {RETRAIN}"
        ]
    if said.oldest >= (now or utcnow()) - timedelta(days=days):
        return []
    return [
        f"{name} was trained on corrections of citizens' mail received from"
        f" {said.oldest:%Y-%m-%d}, older than the retention ({days} days): the purge deletes"
        f" those mails, not what the model learned of them; {RETRAIN}"
    ]
