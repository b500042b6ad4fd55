"""The logfmt formatter: messages with their arguments, tracebacks as one escaped field,
and never the text of a foreign exception (it quotes data: SQL parameters, headers)."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mailbot.errors import MessageError, StoreError
from mailbot.logs import LogfmtFormatter, RepeatedFailures, safe_error, safe_traceback


def record(msg: str, *args: object, exc: BaseException | None = None, **extra: object) -> str:
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    rec = logging.LogRecord(
        "apscheduler.executors.default", logging.ERROR, __file__, 1, msg, args, exc_info
    )
    for key, value in extra.items():
        setattr(rec, key, value)
    return LogfmtFormatter().format(rec)


def fields(line: str) -> dict[str, str]:
    """Parse a logfmt line back (quoted values with \\-escapes)."""
    found = {}
    for key, bare, quoted in re.findall(r'(\w+)=(?:"((?:[^"\\]|\\.)*)"|(\S*))', line):
        found[key] = bare if bare else quoted
    return found


def raise_and_catch(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


def test_message_is_formatted_with_its_arguments() -> None:
    """APScheduler logs 'Job "%s" raised an exception' and '... instances reached (%d)'."""
    line = record('Job "%s" raised an exception', "mailbox:general (trigger: interval[0:01:00])")
    assert (
        'msg="Job \\"mailbox:general (trigger: interval[0:01:00])\\" raised an exception"' in line
    )
    line = record(
        "Execution of job %s skipped: maximum number of running instances reached (%d)", "x", 1
    )
    assert "reached (1)" in line and "%d" not in line


def test_a_message_with_bad_arguments_still_logs() -> None:
    assert "msg=" in record("%d items", "not a number")


def test_traceback_is_one_escaped_field_without_foreign_messages() -> None:
    secret = "citoyen@example.fr Objet: ma demande de titre de séjour"
    exc = raise_and_catch(ValueError(f"bad header {secret}"))
    line = record("quarantined", exc=exc, mailbox="general", uid=7)
    assert "\n" not in line
    parsed = fields(line)
    assert parsed["error"] == "ValueError"
    assert parsed["mailbox"] == "general" and parsed["uid"] == "7"
    trace = parsed["traceback"].replace("\\n", "\n")
    assert trace.startswith("Traceback (most recent call last):")
    assert "raise_and_catch" in trace and "raise exc" in trace
    assert trace.rstrip().endswith("ValueError")
    assert "citoyen" not in line and "séjour" not in line


def test_chained_exceptions_and_our_own_messages_with_addresses_masked() -> None:
    address = "citoyen@example.fr"  # data, as it would come from a mail (not in a code line)
    try:
        try:
            raise KeyError(address)
        except KeyError as inner:
            raise StoreError(
                f"cannot record UID 4 of <{address.replace('citoyen', 'abc')}>"
            ) from inner
    except StoreError as outer:
        trace = safe_traceback(outer)
    assert "KeyError" in trace and "During handling of the above exception" in trace
    assert "StoreError: cannot record UID 4 of <…@…>" in trace
    assert "citoyen" not in trace and "abc@" not in trace
    assert safe_error(MessageError("to: 'a.b@c.fr' is not a valid address")) == (
        "MessageError: to: '…@…' is not a valid address"
    )


def test_deep_recursion_is_folded() -> None:
    def down(n: int) -> int:
        return down(n + 1)

    exc = raise_and_catch_recursion(down)
    trace = safe_traceback(exc)
    assert "RecursionError" in trace
    assert len(trace) < 6000
    assert "outer frames" in trace or "Previous line repeated" in trace


def raise_and_catch_recursion(function: object) -> BaseException:
    try:
        function(0)  # type: ignore[operator]
    except RecursionError as exc:
        return exc
    raise AssertionError("no recursion error")


def test_the_formatter_never_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("no")

    line = record("x", extra_field=Unprintable())
    assert "format_error=RuntimeError" in line


def test_setup_logging_writes_logfmt_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    from mailbot.logs import setup_logging

    setup_logging(logging.INFO)
    try:
        logging.getLogger("mailbot.test").error(
            "failed %s", "here", exc_info=raise_and_catch(OSError(5, "x@y.fr"))
        )
    finally:
        logging.getLogger().handlers[:] = []
    err = capsys.readouterr().err
    assert 'msg="failed here"' in err and "error=OSError" in err and "x@y.fr" not in err
    assert sys.stderr is not None


CLI = (sys.executable, "-m", "mailbot.cli")


def test_one_debug_line_per_mail_and_one_info_line_per_batch(tmp_path: Path) -> None:
    """Issue 14, point 8: at INFO a batch is one line (mails, decisions, seconds); the line
    per mail (mailbox, uid, reference, decision, reason) is DEBUG. No line, even at DEBUG,
    carries a citizen's address or subject (README, "Data kept (privacy)": the logs are
    kept by the system, beyond mailbot's retention)."""
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [*CLI, "--config", str(root / "rules.yaml"), "-v", "demo", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
        cwd=root,
    )
    lines = result.stderr.splitlines()
    per_mail = [line for line in lines if " msg=message " in line]
    batches = [line for line in lines if " msg=batch " in line]
    assert per_mail and all(" level=debug " in line for line in per_mail)
    assert all(re.search(r" decision=\S+ reason=", line) for line in per_mail)
    assert batches and all(" level=info " in line for line in batches)
    counted = sum(int(re.search(r" mails=(\d+) ", line).group(1)) for line in batches)  # type: ignore[union-attr]
    assert counted == len(per_mail)
    for line in batches:
        decisions = re.findall(r" (acknowledge|skip|duplicate|follow_up|quarantine)=(\d+)", line)
        assert sum(int(n) for _, n in decisions) == int(re.search(r" mails=(\d+) ", line).group(1))  # type: ignore[union-attr]
    for personal in _senders_and_subjects(root / "mailbot" / "demo_data" / "maildir"):
        assert personal not in result.stderr


def _senders_and_subjects(maildir: Path) -> set[str]:
    """The addresses (From, Reply-To) and the subjects of the mails of a demo Maildir."""
    import email.policy
    from email import message_from_bytes
    from email.utils import getaddresses

    found: set[str] = set()
    for path in maildir.glob("*/*/*"):
        mail = message_from_bytes(path.read_bytes(), policy=email.policy.default)
        headers = [str(v) for h in ("From", "Reply-To") for v in mail.get_all(h, [])]
        found |= {address for _, address in getaddresses(headers) if "@" in address}
        found.add(str(mail.get("Subject", "")))
    assert len(found) > 10  # the demo's mails were read
    return {text for text in found if len(text) >= 8}  # not a word any line may hold


def test_repeated_failures_are_logged_once_per_run_and_a_new_failure_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A failure not known as transient is an ERROR with its traceback, once; another kind
    of failure is logged again; the end of the run once, with how many there were."""
    log = logging.getLogger("mailbot.test.repeated")
    caplog.set_level(logging.DEBUG, logger=log.name)
    failures = RepeatedFailures(
        log,
        "job failed",
        "job works again",
        lambda e: "busy" if isinstance(e, TimeoutError) else None,
    )
    for exc in (KeyError("k"), KeyError("k"), TimeoutError(), TimeoutError(), KeyError("k")):
        failures.failed(exc)
    failures.succeeded()
    failures.succeeded()  # nothing to say: no failure since
    seen = [(r.levelname, r.getMessage(), r.exc_info is not None) for r in caplog.records]
    assert seen == [
        ("ERROR", "job failed", True),
        ("DEBUG", "job failed", False),
        ("WARNING", "job failed", False),
        ("DEBUG", "job failed", False),
        ("ERROR", "job failed", True),
        ("INFO", "job works again", False),
    ]
    assert caplog.records[2].__dict__["reason"] == "busy"
    assert caplog.records[-1].__dict__["failures"] == 5
