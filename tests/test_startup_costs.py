"""What a start no longer pays for (issue 14, point 9): behaviours, never timings."""

from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from servers import MailUser

from mailbot.cli import parser
from mailbot.core import classifier
from mailbot.errors import MailboxError
from mailbot.mail import imap
from mailbot.mail.imap import ImapMailbox

ROOT = Path(__file__).resolve().parent.parent


def test_the_parser_asks_gettext_once_per_message(monkeypatch: pytest.MonkeyPatch) -> None:
    """argparse translates the same few strings for each sub-parser; gettext searched the
    disk at each call. Built once per string, argparse left as it was, same commands."""
    asked: Counter[str] = Counter()

    def translate(message: str) -> str:
        asked[message] += 1
        return message

    monkeypatch.setattr(argparse, "_", translate, raising=False)
    built = parser()
    assert asked and max(asked.values()) == 1
    assert argparse._ is translate  # type: ignore[attr-defined]
    args = built.parse_args(["--config", "x.yaml", "-q", "poll", "--once"])
    assert (args.command, args.once, args.quiet) == ("poll", True, True)


def test_the_model_is_shipped_uncompressed_and_a_compressed_one_loads_the_same(
    tmp_path: Path,
) -> None:
    """The routing model is stored with ``np.savez`` (not compressed: read ~25 ms faster at
    start); a compressed file of an earlier release is read by the same loader, to the same
    arrays."""
    (shipped,) = (ROOT / "mailbot" / "models").glob("routing-*.npz")
    with np.load(shipped, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    packed = tmp_path / shipped.name
    with packed.open("wb") as handle:
        np.savez_compressed(handle, **arrays)
    assert shipped.stat().st_size > packed.stat().st_size  # the shipped one is not deflated
    old, new = classifier.load(packed), classifier.load(shipped)
    assert np.array_equal(old.features, new.features) and np.array_equal(old.idf, new.idf)
    assert old.meta == new.meta and set(old.heads) == set(new.heads)
    for name, head in old.heads.items():
        assert head.classes == new.heads[name].classes
        assert np.array_equal(head.coef, new.heads[name].coef)
        assert np.array_equal(head.intercept, new.heads[name].intercept)


MAIL = b"From: a@example.test\r\nTo: b@example.test\r\nSubject: early\r\n\r\nBonjour\r\n"


def _sessions_become(user: MailUser, count: int) -> bool:
    """Whether Dovecot counts ``count`` sessions of ``user`` within a few seconds (a logout
    made on another thread lands when it lands)."""
    deadline = time.monotonic() + 10
    while user.server.connection_count(user.name) != count:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.servers
def test_an_early_connection_is_the_one_connect_takes_and_one_never_taken_is_logged_out(
    imap_user: MailUser,
) -> None:
    """`poll` and `run` open the inboxes' connections on threads while the application loads
    (``connect_early``): ``connect`` then takes that session (one login, not two), and a
    mailbox closed without connecting logs its early session out."""
    imap_user.append(MAIL)
    box = ImapMailbox(imap_user.imap_config(), name="general")
    box.connect_early()
    box.connect()
    box.select("INBOX")
    assert [mail.raw for mail in box.fetch(box.uids_after(0), 10)] == [MAIL]
    assert _sessions_become(imap_user, 1)
    box.close()
    assert _sessions_become(imap_user, 0)
    unused = ImapMailbox(imap_user.imap_config(), name="general")
    unused.connect_early()
    unused.close()  # a folder this worker does not poll (another one holds its lease)
    assert _sessions_become(imap_user, 0) and not unused.connected


@pytest.mark.servers
def test_an_early_connection_that_failed_fails_connect_and_a_stale_one_is_replaced(
    imap_user: MailUser, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The early login's refusal is what ``connect`` raises (the poller's usual error); an
    early session older than ``EARLY_FRESH_SECONDS`` is logged out and a new one opened."""
    wrong = tmp_path / "wrong"
    wrong.write_text("not the password\n", encoding="utf-8")
    refused = ImapMailbox(
        imap_user.imap_config().model_copy(update={"password_file": wrong}), name="general"
    )
    refused.connect_early()
    with pytest.raises(MailboxError, match="login refused"):
        refused.connect()
    assert not refused.connected
    monkeypatch.setattr(imap, "EARLY_FRESH_SECONDS", -1.0)  # every early session is stale
    box = ImapMailbox(imap_user.imap_config(), name="general")
    box.connect_early()
    box.connect()
    assert box.connected and _sessions_become(imap_user, 1)
    box.close()
    assert _sessions_become(imap_user, 0)
