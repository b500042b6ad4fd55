"""The console's permission table (core/permissions) applied by the use cases themselves:
what an agent's role or services forbid in the console is refused through ``mailbot reply``,
``mailbot answered``, ``mailbot reopen``, ``mailbot transfer``, ``mailbot correct --agent``
and any other face — a quality agent replying to a citizen, an agent closing or marking
answered the mail of a service that is not theirs, a plain agent (or a head of another
service) transferring, correcting or giving a message to a colleague.

Real Dovecot and SMTP servers (tests/servers.py), as tests/test_agent_requests.py.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from rulesfile import dump_rules, load_rules
from test_e2e import citizen_mail, db_rows, etrangers_user, poll, setup

from mailbot.app import assignment, corrections, no_reply
from mailbot.app.answered import AnsweredHow, mark_answered
from mailbot.app.context import App, build_app
from mailbot.app.reply import Draft, Replies
from mailbot.app.transfer import Transfers
from mailbot.cli import main
from mailbot.core import permissions
from mailbot.core.statuses import NoReplyReason
from mailbot.errors import RequestError
from mailbot.mail.originals import ImapOriginals
from mailbot.web import authz

__all__ = ["etrangers_user", "setup"]
PARIS = ZoneInfo("Europe/Paris")
QUALITY = "qbernard"  # mission qualité: reads every service's mail, answers none
OTHER_HEAD = "pgirard"  # head of the cartes-grises service: reassigns its mail, not general's


def with_quality_agent(config: Path) -> None:
    """The shipped agents, plus a quality agent whose services include the general one and
    a head of another service (cartes-grises)."""
    data = load_rules(config)
    agents = yaml.safe_load(Path(data["agents"]).read_text(encoding="utf-8"))
    agents["agents"][QUALITY] = {
        "first_name": "Quentin",
        "last_name": "Bernard",
        "function": "Chargé de mission qualité",
        "service": "qualite-accueil",
        "role": "quality",
        "services": ["general", "qualite-accueil"],
    }
    agents["agents"][OTHER_HEAD] = {
        "first_name": "Paul",
        "last_name": "Girard",
        "function": "Chef du bureau des cartes grises",
        "service": "cartes-grises",
        "role": "head",
    }
    copy = config.parent / "agents-quality.yaml"
    copy.write_text(yaml.safe_dump(agents, allow_unicode=True), encoding="utf-8")
    data["agents"] = str(copy)
    config.write_text(dump_rules(data), encoding="utf-8")


def tracked(setup: Any) -> tuple[Path, str, datetime]:
    """One citizen's mail to the general mailbox, acknowledged (the general service's)."""
    config, general, _etrangers, smtp = setup
    with_quality_agent(config)
    received = datetime.now(PARIS) - timedelta(hours=2)
    general.append(
        citizen_mail(1, subject="Horaires", message_id="<perm-1@example.fr>"),
        internaldate=received,
    )
    assert poll(config, acknowledge_existing=True) == 0
    smtp.wait_for(1)
    smtp.clear()
    ((reference, service),) = db_rows(config, "SELECT reference, service FROM messages")
    assert service == "general"
    return config, reference, received


def nothing_done(config: Path, smtp: Any) -> None:
    assert db_rows(config, "SELECT id FROM outbox WHERE kind = 'reply'") == []
    kinds = {kind for (kind,) in db_rows(config, "SELECT kind FROM events")}
    assert not kinds & {"reply_queued", "answered_elsewhere", "no_reply_needed", "reopened"}
    assert smtp.messages == []


def test_the_web_console_reads_the_cores_table() -> None:
    """One table for every face: the console's names are the core's objects."""
    assert authz.POLICY is permissions.POLICY
    assert authz.allowed is permissions.allowed and authz.Action is permissions.Action


def test_a_quality_agent_cannot_reply_through_the_command_line(
    setup: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """The console shows a quality agent the general service's mail but no reply form;
    ``mailbot reply`` refused them nothing: the use case now refuses, naming the agent,
    the action and the service, and nothing is queued or sent."""
    config, reference, _received = tracked(setup)
    args = ["--config", str(config), "reply", reference, "--agent", QUALITY]
    assert main([*args, "--text", "Bien reçu.", "--send"]) == 2
    err = capsys.readouterr().err
    assert f"agent: {QUALITY}: their role quality may not send a reply (reply)" in err
    assert "service general's mail" in err
    assert main([*args, "--text", "Bien reçu."]) == 2  # no preview either
    nothing_done(config, setup[3])
    app = build_app(config)
    replies = Replies(app.config, app.store, app.renderer, app.agent)
    with pytest.raises(RequestError, match=f"agent: {QUALITY}: their role quality") as refused:
        replies.send(QUALITY, reference, Draft.free("Bien reçu."))
    assert "votre rôle ne permet pas de répondre à ce courriel" in (refused.value.shown or "")
    nothing_done(config, setup[3])
    assert len(replies.send("aleroux", reference, Draft.free("Bien reçu.")).outbox_ids) == 1


def test_mark_answered_is_refused_on_another_services_mail(
    setup: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """``mailbot answered`` by an agent of the passports' service on the general service's
    mail, or by a quality agent: refused by the use case, nothing recorded."""
    config, reference, received = tracked(setup)
    at = (received + timedelta(hours=1)).isoformat()
    args = ["--config", str(config), "answered", reference, "--how", "phone"]
    args += ["--reason", "horaires donnés", "--at", at]
    assert main([*args, "--agent", "smarchand"]) == 2
    err = capsys.readouterr().err
    assert "agent: smarchand: may mark answered (reply) on the mail of their services" in err
    assert "(cni-passeport), not on the service general's" in err
    app = build_app(config)
    with pytest.raises(RequestError, match=f"{QUALITY}: their role quality may not mark"):
        mark_answered(app.config, app.store, app.agent, QUALITY, reference, AnsweredHow.PHONE, "vu")
    nothing_done(config, setup[3])
    assert main([*args, "--agent", "aleroux"]) == 0  # the general service's agent


def test_close_reopen_and_mark_read_are_refused_outside_the_agents_services(
    setup: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """Closing without a reply, reopening, marking read: the console checked the service in
    its handlers; the use cases now do, for ``mailbot reopen`` and every other face."""
    config, reference, _received = tracked(setup)
    app = build_app(config)

    def close(agent_id: str) -> object:
        return no_reply.close_without_reply(
            app.config, app.store, app.agent, agent_id, reference, NoReplyReason.SPAM, ""
        )

    for agent_id in ("cdurand", QUALITY):
        with pytest.raises(RequestError, match=f"agent: {agent_id}: .*close without reply"):
            close(agent_id)
    with pytest.raises(RequestError, match=r"agent: cdurand: .*mark read .*service general's"):
        no_reply.mark_read(app.config, app.store, app.agent, "cdurand", reference)
    nothing_done(config, setup[3])
    close("aleroux")
    assert db_rows(config, "SELECT no_reply FROM messages") == [("spam",)]
    args = ["--config", str(config), "reopen", reference, "--reason", "pas un spam"]
    assert main([*args, "--agent", "cdurand"]) == 2
    err = capsys.readouterr().err
    assert "agent: cdurand: may reopen (reply) on the mail of their services" in err
    assert "not on the service general's" in err
    assert db_rows(config, "SELECT no_reply FROM messages") == [("spam",)]
    assert main([*args, "--agent", "lmoreau"]) == 0  # head of etrangers and general
    assert db_rows(config, "SELECT no_reply FROM messages") == [(None,)]


def transfers_of(app: App) -> Transfers:
    return Transfers(app.config, app.store, app.renderer, app.agent, ImapOriginals(app.config))


def still_generals(config: Path, smtp: Any) -> None:
    """Nothing transferred, corrected or assigned: the message is the general service's,
    unassigned, no notice or forward queued, no event recorded, nothing sent."""
    assert db_rows(config, "SELECT service, assignee, transferred FROM messages") == [
        ("general", None, 0)
    ]
    assert db_rows(config, "SELECT kind FROM outbox WHERE kind != 'ar'") == []
    assert db_rows(config, "SELECT id FROM corrections") == []
    kinds = {kind for (kind,) in db_rows(config, "SELECT kind FROM events")}
    assert not kinds & {"transferred", "routing_corrected", "assigned"}
    assert smtp.messages == []


def test_only_a_head_of_the_messages_service_transfers_it(
    setup: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """The console lets only a head of the message's service transfer it (REASSIGN);
    ``mailbot transfer`` let any agent: the use case now refuses a plain agent of the
    service, a head of another service and a quality agent — preview and transfer alike."""
    config, reference, _received = tracked(setup)
    args = ["--config", str(config), "transfer", reference, "--service", "cartes-grises"]
    args += ["--reason", "carte grise"]
    assert main([*args, "--agent", "aleroux", "--send"]) == 2
    err = capsys.readouterr().err
    assert "agent: aleroux: their role agent may not transfer (reassign)" in err
    assert "service general's mail" in err
    assert main([*args, "--agent", "aleroux"]) == 2  # no preview either
    assert main([*args, "--agent", OTHER_HEAD, "--send"]) == 2
    err = capsys.readouterr().err
    assert f"agent: {OTHER_HEAD}: may transfer (reassign) on the mail of their services" in err
    assert "(cartes-grises), not on the service general's" in err
    transfers = transfers_of(build_app(config))
    with pytest.raises(RequestError, match=f"{QUALITY}: their role quality may not transfer"):
        transfers.transfer(QUALITY, reference, "cartes-grises", "carte grise")
    with pytest.raises(RequestError, match="aleroux: their role agent may not transfer") as no:
        transfers.preview("aleroux", reference, "cartes-grises", "carte grise")
    assert "votre rôle ne permet pas de transférer ce courriel" in (no.value.shown or "")
    with pytest.raises(RequestError, match=f"{OTHER_HEAD}: may transfer") as refused:
        transfers.transfer(OTHER_HEAD, reference, "cartes-grises", "carte grise")
    assert "seul un chef de ce service peut transférer" in (refused.value.shown or "")
    still_generals(config, setup[3])
    assert main([*args, "--agent", "lmoreau", "--send"]) == 0  # head of etrangers and general
    assert db_rows(config, "SELECT service FROM messages") == [("cartes-grises",)]


def test_a_routing_correction_by_an_agent_needs_a_head_of_the_messages_service(
    setup: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """The console's « Corriger » asks REASSIGN on the message's service; ``mailbot correct
    --agent`` (with or without ``--transfer``) and ``correct_in_console`` now ask it too.
    ``mailbot correct`` without ``--agent`` is the operator's shell command: allowed."""
    config, reference, _received = tracked(setup)
    args = ["--config", str(config), "correct", reference, "--category", "information"]
    moving = [*args, "--service", "cartes-grises", "--transfer"]
    assert main([*moving, "--agent", "aleroux"]) == 2
    err = capsys.readouterr().err
    assert "agent: aleroux: their role agent may not correct the routing (reassign)" in err
    assert main([*args, "--service", "general", "--agent", "aleroux"]) == 2  # category only
    assert "aleroux: their role agent may not correct" in capsys.readouterr().err
    assert main([*args, "--service", "general", "--agent", OTHER_HEAD, "--transfer"]) == 2
    assert "not on the service general's" in capsys.readouterr().err
    app = build_app(config)
    with pytest.raises(RequestError, match=f"{QUALITY}: their role quality may not correct"):
        corrections.correct_in_console(
            transfers_of(app), QUALITY, reference, ("cartes-grises", "information"), ""
        )
    with pytest.raises(RequestError, match=f"{OTHER_HEAD}: may correct the routing"):
        corrections.correct(
            app.config, app.store, reference, "general", "information", None, OTHER_HEAD
        )
    still_generals(config, setup[3])
    assert main([*args, "--service", "general"]) == 0  # the operator, no agent
    assert main([*args, "--service", "general", "--agent", "lmoreau"]) == 0
    assert main([*moving, "--agent", "lmoreau"]) == 0
    assert db_rows(config, "SELECT service FROM messages") == [("cartes-grises",)]
    assert len(db_rows(config, "SELECT id FROM corrections")) == 3


def test_giving_a_message_to_a_colleague_needs_a_head_taking_it_an_agent(setup: Any) -> None:
    """The console asks REPLY to take a message oneself and REASSIGN to give it to someone
    else (or to take it from its agent); ``assignment.assign`` now asks the same of every
    face (releasing one's own: below)."""
    config, reference, _received = tracked(setup)
    app = build_app(config)

    def assign(agent_id: str, assignee: str | None) -> assignment.Assigned:
        return assignment.assign(app.config, app.store, app.agent, agent_id, reference, assignee)

    with pytest.raises(RequestError, match="aleroux: their role agent may not give") as no:
        assign("aleroux", "lmoreau")
    assert "votre rôle ne permet pas de confier ce courriel à un autre agent" in (
        no.value.shown or ""
    )
    for agent_id, assignee, refusal in [
        (OTHER_HEAD, "aleroux", f"{OTHER_HEAD}: may give .* not on the service general's"),
        ("cdurand", "cdurand", "cdurand: may take .* not on the service general's"),
        (QUALITY, QUALITY, f"{QUALITY}: their role quality may not take"),
    ]:
        with pytest.raises(RequestError, match=refusal):
            assign(agent_id, assignee)
    still_generals(config, setup[3])
    assert assign("aleroux", "aleroux").assignee == "aleroux"  # an agent takes it
    assert assign("lmoreau", "lmoreau").previous == "aleroux"  # a head takes it back
    assert assign("lmoreau", None).assignee is None


# ------------------------------------------------------------- moved between check and write


def moved_after_the_check(
    monkeypatch: pytest.MonkeyPatch, module: Any, app: App, reference: str
) -> None:
    """The message moved to cartes-grises right after the use case's first permission check,
    before its write transaction (a head's transfer or correction landing in that window,
    here the operator's correction): ``module.permit`` checks, then moves it, once."""
    real = module.permit
    moved: list[bool] = []

    def check_then_move(*args: Any) -> None:
        real(*args)
        if not moved:
            moved.append(True)
            corrections.correct(app.config, app.store, reference, "cartes-grises", "information")

    monkeypatch.setattr(module, "permit", check_then_move)


def moving_requests(app: App, reference: str) -> dict[str, tuple[Any, Any]]:
    """Each request checked on the message's service, with the module whose ``permit`` its
    first check calls."""
    from mailbot.app import answered, reply, transfer

    def close(agent_id: str) -> object:
        return no_reply.close_without_reply(
            app.config, app.store, app.agent, agent_id, reference, NoReplyReason.SPAM, ""
        )

    return {
        "transfer": (
            transfer,
            lambda: transfers_of(app).transfer("lmoreau", reference, "etrangers", "séjour"),
        ),
        "reply": (
            reply,
            lambda: Replies(app.config, app.store, app.renderer, app.agent).send(
                "aleroux", reference, Draft.free("Bien reçu.")
            ),
        ),
        "answered": (
            answered,
            lambda: mark_answered(
                app.config, app.store, app.agent, "aleroux", reference, AnsweredHow.PHONE, "vu"
            ),
        ),
        "close": (no_reply, lambda: close("aleroux")),
        "reopen": (
            no_reply,
            lambda: no_reply.reopen(app.config, app.store, app.agent, "aleroux", reference),
        ),
        "mark-read": (
            no_reply,
            lambda: no_reply.mark_read(app.config, app.store, app.agent, "aleroux", reference),
        ),
        "take": (
            assignment,
            lambda: assignment.assign(
                app.config, app.store, app.agent, "aleroux", reference, "aleroux"
            ),
        ),
        "release": (
            assignment,
            lambda: assignment.assign(app.config, app.store, app.agent, "lmoreau", reference, None),
        ),
    }


@pytest.mark.parametrize(
    "request_name",
    ["transfer", "reply", "answered", "close", "reopen", "mark-read", "take", "release"],
)
def test_a_message_moved_between_the_check_and_the_write_is_refused(
    setup: Any, monkeypatch: pytest.MonkeyPatch, request_name: str
) -> None:
    """The use cases checked the agent's right on the message's service as read before
    their write transaction: a message moved meanwhile to a service the agent does not
    handle was still transferred, answered, closed, taken… by them. Checked again where it
    is written, on the service read there: refused, nothing queued or recorded."""
    config, reference, _received = tracked(setup)
    app = build_app(config)
    if request_name == "reopen":
        no_reply.close_without_reply(
            app.config, app.store, app.agent, "aleroux", reference, NoReplyReason.SPAM, ""
        )
    if request_name == "release":
        assignment.assign(app.config, app.store, app.agent, "lmoreau", reference, "lmoreau")
    before = db_rows(config, "SELECT kind FROM events ORDER BY id")
    module, run = moving_requests(app, reference)[request_name]
    moved_after_the_check(monkeypatch, module, app, reference)
    with pytest.raises(RequestError, match="not on the service cartes-grises's") as refused:
        run()
    shown = refused.value.shown or ""
    assert "cartes grises (certificats d'immatriculation) », que vous ne traitez pas" in shown
    assert db_rows(config, "SELECT service FROM messages") == [("cartes-grises",)]
    assert db_rows(config, "SELECT kind FROM events ORDER BY id") == [
        *before,
        ("routing_corrected",),
    ]
    assert db_rows(config, "SELECT kind FROM outbox WHERE kind != 'ar'") == []
    assert setup[3].messages == []


# ------------------------------------------------------------------ releasing one's own mail


def test_a_plain_agent_releases_a_message_they_took_not_a_colleagues(setup: Any) -> None:
    """« Ne plus traiter »: giving a message to nobody needed a head (REASSIGN), so a plain
    agent who took it could not let it go. They may now release their own; taking a
    colleague's off them, or another service's, stays a head's."""
    config, reference, _received = tracked(setup)
    app = build_app(config)

    def assign(agent_id: str, assignee: str | None) -> assignment.Assigned:
        return assignment.assign(app.config, app.store, app.agent, agent_id, reference, assignee)

    assert assign("aleroux", "aleroux").assignee == "aleroux"
    released = assign("aleroux", None)
    assert (released.assignee, released.previous) == (None, "aleroux")
    assert db_rows(config, "SELECT assignee FROM messages") == [(None,)]
    assign("lmoreau", "lmoreau")  # a head takes it: it is theirs now, not aleroux's
    with pytest.raises(RequestError, match="aleroux: their role agent may not give") as no:
        assign("aleroux", None)
    assert "retirer à son agent" in (no.value.shown or "")
    with pytest.raises(RequestError, match="cdurand: their role agent may not give"):
        assign("cdurand", None)  # another service's agent
    assert db_rows(config, "SELECT assignee FROM messages") == [("lmoreau",)]
    details = [d for (d,) in db_rows(config, "SELECT detail FROM events WHERE kind = 'assigned'")]
    assert [(json.loads(d)["agent"], json.loads(d)["assignee"]) for d in details] == [
        ("aleroux", "aleroux"),
        ("aleroux", None),
        ("lmoreau", "lmoreau"),
    ]


def test_releasing_a_message_a_head_gave_away_meanwhile_is_refused(
    setup: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Who has the message is read again where the release is written: a head gave it to a
    colleague after the agent's request was checked — the agent would have taken it from
    them, a head's right. Refused; the colleague keeps it."""
    config, reference, _received = tracked(setup)
    app = build_app(config)
    assignment.assign(app.config, app.store, app.agent, "aleroux", reference, "aleroux")
    real = assignment.permit

    def check_then_give(*args: Any) -> None:
        real(*args)
        monkeypatch.setattr(assignment, "permit", real)
        assignment.assign(app.config, app.store, app.agent, "lmoreau", reference, "lmoreau")

    monkeypatch.setattr(assignment, "permit", check_then_give)
    with pytest.raises(RequestError, match="aleroux: their role agent may not give"):
        assignment.assign(app.config, app.store, app.agent, "aleroux", reference, None)
    assert db_rows(config, "SELECT assignee FROM messages") == [("lmoreau",)]


# ------------------------------------------------------------------------- repeated requests


def test_a_repeated_key_gives_its_first_answer_to_the_agent_who_made_it_only(setup: Any) -> None:
    """A request repeated under its idempotency key returns its first answer without a
    permission check. The key is the form's (message and state), not the agent's: another
    agent sending the same key — a plain agent, a quality agent — got « done » (and the
    first request's outbox id) for a transfer or a reply they may not make. The key is now
    the agent's: they go through the checks, and are refused."""
    config, reference, _received = tracked(setup)
    app = build_app(config)
    transfers = transfers_of(app)
    moved = transfers.transfer("lmoreau", reference, "cartes-grises", "carte grise", key="t-1")
    again = transfers.transfer("lmoreau", reference, "cartes-grises", "carte grise", key="t-1")
    assert again.repeated and again.outbox_ids == moved.outbox_ids  # a double click: done
    for agent_id in ("aleroux", QUALITY):  # neither may transfer cartes-grises' mail
        with pytest.raises(RequestError, match=f"agent: {agent_id}: "):
            transfers.transfer(agent_id, reference, "cartes-grises", "carte grise", key="t-1")
    replies = Replies(app.config, app.store, app.renderer, app.agent)
    first = replies.send("cdurand", reference, Draft.free("Bien reçu."), key="form-1")
    again = replies.send("cdurand", reference, Draft.free("Bien reçu."), key="form-1")
    assert again.repeated and again.outbox_ids == first.outbox_ids
    for agent_id in ("aleroux", QUALITY):
        with pytest.raises(RequestError, match=f"agent: {agent_id}: .* send a reply"):
            replies.send(agent_id, reference, Draft.free("Bien reçu."), key="form-1")
    assert len(db_rows(config, "SELECT id FROM outbox WHERE kind = 'reply'")) == 1
    assert len(db_rows(config, "SELECT id FROM events WHERE kind = 'transferred'")) == 1
