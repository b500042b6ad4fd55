"""A routing model trained on the agents' corrections must not outlive the retention: its
header dates the corrected mail it learned from, `mailbot check` and `mailbot status` say
when that mail is past `retention.days` (retrain, and the model forgets it), and a word of
one citizen's corrected mails (a name, a phone number) never enters its vocabulary."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest
from in_process import run_main
from rulesfile import dump_rules, load_rules
from test_status import all_polled

from mailbot.app import supervision, training
from mailbot.config import load_config
from mailbot.core.classifier import _h, load, save
from mailbot.core.clock import utcnow
from mailbot.core.statuses import Health

ROOT = Path(__file__).resolve().parent.parent
CONFIG = load_config(ROOT / "rules.yaml")
SHIPPED = ROOT / "mailbot" / "models" / "routing-2359308ca52a.npz"


@lru_cache(maxsize=1)
def _labelled() -> tuple[training.Sample, ...]:
    """Every third mail of tests/data/routing: enough for two heads, quick to fit."""
    return tuple(training.load_labelled(CONFIG, ROOT / "tests" / "data" / "routing")[::3])


def corrected(
    sample: training.Sample, received: datetime, body: str = "", sender: str = ""
) -> training.Sample:
    """``sample`` as an agent's correction of a citizen's mail received then (its text
    ``body`` added, written by ``sender``), as ``routing train`` reads one from IMAP."""
    facts = replace(
        sample.facts,
        body=f"{sample.facts.body}\n{body}",
        sender=sender or sample.facts.sender,
    )
    return replace(sample, facts=facts, source="corrections", received=received)  # type: ignore[call-arg]


def test_the_header_dates_the_corrected_mail_the_model_learned_from() -> None:
    """The receipt dates of the oldest and newest corrected mails are written in the
    header; a model trained on the labelled corpora alone says it holds none."""
    labelled = list(_labelled())
    old, new = datetime(2025, 3, 1, 8, tzinfo=UTC), datetime(2025, 9, 2, 17, tzinfo=UTC)
    extra = [corrected(labelled[0], new), corrected(labelled[1], old), corrected(labelled[2], new)]
    model = training.fit([*labelled, *extra], c=20.0)
    said = model.meta["corrected_mail"]
    assert (said["mails"], said["oldest_received"], said["newest_received"]) == (
        3,
        old.isoformat(),
        new.isoformat(),
    )
    assert training.fit(labelled, c=20.0).meta["corrected_mail"] is None


def test_a_model_keeping_another_ones_vocabulary_keeps_its_dates() -> None:
    """``--keep-service-from``: the vocabulary, IDF and service head come from the kept
    model, learned from its corrected mails too; the new header spans both."""
    labelled = list(_labelled())
    old, new = datetime(2025, 3, 1, tzinfo=UTC), datetime(2025, 9, 2, tzinfo=UTC)
    kept = training.fit([*labelled, corrected(labelled[0], old)], c=20.0)
    alone = training.refit_heads(kept, labelled, c=20.0)
    assert alone.meta["corrected_mail"]["oldest_received"] == old.isoformat()
    both = training.refit_heads(kept, [*labelled, corrected(labelled[1], new)], c=20.0)
    said = both.meta["corrected_mail"]
    assert (said["oldest_received"], said["newest_received"]) == (old.isoformat(), new.isoformat())


def test_one_citizens_words_never_enter_the_vocabulary() -> None:
    """A name, a birth date and a phone number written in two corrected mails of one
    citizen (a mail and its relance) pass ``--min-df 2`` counted in mails: kept, their
    hashed ids would say who wrote. A feature corrected mails bring is kept only when
    the labelled corpora have it too or three citizens wrote it."""
    labelled = list(_labelled())
    when = datetime(2025, 3, 1, tzinfo=UTC)
    own = "Je suis Aurélien Zyvonnek, né en 1987, joignable au 06 12 34 56 78."
    twice = [corrected(labelled[i], when, own, "aurelien.zyvonnek@example.fr") for i in (0, 1)]
    shared = "Ma demande porte sur le formulaire quintoplex."  # a word of many citizens
    many = [corrected(labelled[i], when, shared, f"usager{i}@example.fr") for i in (2, 3, 4)]
    model = training.fit([*labelled, *twice, *many], c=20.0)
    features = set(model.features.tolist())
    for private in ("w:zyvonnek", "w:aurelien", "b:aurelien zyvonnek", "b:34 56", "c: zyvo"):
        assert _h(private) not in features, private
    assert _h("w:quintoplex") in features
    assert _h("w:bonjour") in features  # the labelled corpora's words, as before


def test_the_labelled_corpora_alone_make_the_same_vocabulary_as_before() -> None:
    """Without corrections the vocabulary is every feature of at least ``min_df`` mails,
    as before the rule above: a model trained so (the shipped one) is unchanged."""
    from collections import Counter

    from mailbot.core.classifier import raw_counts

    labelled = list(_labelled())
    df: Counter[int] = Counter()
    for sample in labelled:
        df.update(raw_counts(*sample.words).keys())
    model = training.fit(labelled, c=20.0)
    assert model.features.tolist() == sorted(f for f, n in df.items() if n >= training.MIN_DF)


def model_with(tmp_path: Path, **header: Any) -> Path:
    """The shipped model's numbers under a header that says ``header`` (written apart:
    the shipped file is never changed)."""
    shipped = load(SHIPPED)
    path = tmp_path / "models" / "routing-test.npz"
    meta = {k: v for k, v in shipped.meta.items() if k != "format"}
    save(path, shipped.features, shipped.idf, shipped.heads, {**meta, **header})
    return path


def configured(tmp_path: Path, model: Path, days: int) -> Path:
    data = load_rules()
    data["database"] = f"sqlite:///{tmp_path / 'mailbot.db'}"
    data["templates"] = str(ROOT / "templates")
    data["agents"] = str(ROOT / "agents.yaml")
    data["routing"]["model"]["file"] = str(model)
    data["retention"] = {"days": days}
    path = tmp_path / "rules.yaml"
    path.write_text(dump_rules(data), encoding="utf-8")
    path.chmod(0o600)
    return path


def dated(oldest: datetime, newest: datetime) -> dict[str, Any]:
    return {
        "corrected_mail": {
            "mails": 4,
            "oldest_received": oldest.isoformat(),
            "newest_received": newest.isoformat(),
        }
    }


RETRAIN = "retrain (`mailbot routing train`) so that the model forgets purged mails"


@pytest.mark.parametrize("days", [30, 60])
def test_check_and_status_warn_of_a_model_holding_mail_past_the_retention(
    tmp_path: Path, days: int
) -> None:
    """Corrected mail received 40 and 10 days ago: past a 30-day retention, `check` warns
    (exit 0, a warning) and `status` is WARNING (exit 1) until the model is retrained;
    within a 60-day retention, neither says anything."""
    now = utcnow()
    model = model_with(tmp_path, **dated(now - timedelta(days=40), now - timedelta(days=10)))
    config = configured(tmp_path, model, days)
    all_polled(config).close()
    checked = run_main(config, "check")
    assert checked.returncode == 0, checked.stderr
    status = run_main(config, "status")
    found = supervision.status(load_config(config), all_polled(config))
    mine = [c for c in found.checks if c.what == "routing model retention"]
    if days == 60:
        assert RETRAIN not in checked.stderr and RETRAIN not in status.stdout
        assert status.returncode == 0, status.stdout
        assert mine == []
        return
    assert RETRAIN in checked.stderr
    assert "routing-test.npz" in checked.stderr and f"the retention ({days} days)" in checked.stderr
    assert status.returncode == 1, status.stdout
    assert status.stdout.startswith("MAILBOT WARNING - ")
    assert RETRAIN in status.stdout
    assert [c.state for c in mine] == [Health.WARNING]


def test_a_model_trained_without_corrections_is_never_past_the_retention(
    tmp_path: Path,
) -> None:
    """The shipped model (its header names no corrections) and one saying it holds none:
    nothing to forget, whatever the retention."""
    for path in (SHIPPED, model_with(tmp_path, corrected_mail=None)):
        config = configured(tmp_path, path, 1)
        checked = run_main(config, "check")
        assert checked.returncode == 0 and RETRAIN not in checked.stderr, checked.stderr
        found = supervision.status(load_config(config), all_polled(config))
        assert not [c for c in found.checks if c.what == "routing model retention"]


def test_a_model_trained_on_corrections_without_dates_is_said_unknown(tmp_path: Path) -> None:
    """A model written before its header dated the corrections (``sources`` names them):
    no one can tell whether it holds purged mail, so it is said, until it is retrained."""
    sources = {"dev": 209, "corrections": 12}
    model = model_with(tmp_path, sources=sources)
    config = configured(tmp_path, model, 730)
    checked = run_main(config, "check")
    assert RETRAIN in checked.stderr and "not dated" in checked.stderr, checked.stderr
    found = supervision.status(load_config(config), all_polled(config))
    assert [c.state for c in found.checks if c.what == "routing model retention"] == [
        Health.WARNING
    ]


def test_the_purge_says_what_it_cannot_reach(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The worker's daily purge logs it as a WARNING each day until the model is trained
    again; `mailbot purge --days N` says it against its own N."""
    import logging

    from mailbot import jobs
    from mailbot.store import Store

    now = utcnow()
    model = model_with(tmp_path, **dated(now - timedelta(days=40), now - timedelta(days=40)))
    config = configured(tmp_path, model, 730)
    kept = run_main(config, "purge")
    assert kept.returncode == 0 and RETRAIN not in kept.stderr, kept.stderr
    shorter = run_main(config, "purge", "--days", "30")
    assert shorter.returncode == 0 and RETRAIN in shorter.stderr, shorter.stderr
    loaded = load_config(configured(tmp_path, model, 30))
    store = Store(loaded.database)
    try:
        with caplog.at_level(logging.WARNING, logger="mailbot"):
            jobs.purge_retention(loaded, store)
    finally:
        store.close()
    assert [r.levelno for r in caplog.records if RETRAIN in r.getMessage()] == [logging.WARNING]
