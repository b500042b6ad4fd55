"""``mailbot correct`` and ``mailbot routing train|evaluate``: the learned side of routing.

Only argparse and light imports at the top: scikit-learn is imported when a command that
trains runs, so the other commands start as fast as before.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mailbot.errors import ConfigError, MailGoneError, RequestError, UnreadableMailError

if TYPE_CHECKING:
    from mailbot.config import Config

DEFAULT_LABELLED = (
    "tests/data/corpus/dev",
    "tests/data/routing",
    "tests/data/corpus/train",
    "tests/data/corpus/train-2a",
    "tests/data/corpus/train-2b",
    "tests/data/corpus/train-2c",
    "tests/data/corpus/train-3a",
    "tests/data/corpus/train-3b",
    "tests/data/corpus/train-3c",
    "tests/data/corpus/train-4a",
    "tests/data/corpus/train-4b",
    "tests/data/corpus/train-4c",
    "tests/data/corpus/train-5a",
    "tests/data/corpus/train-5b",
    "tests/data/corpus/train-5c",
    "tests/data/corpus/train-6a",
    "tests/data/corpus/train-6b",
    "tests/data/corpus/train-6c",
    "tests/data/corpus/train-7a",
    "tests/data/corpus/train-7b",
    "tests/data/corpus/train-7c",
    "tests/data/corpus/train-8a",
    "tests/data/corpus/train-8b",
    "tests/data/corpus/train-8c",
    "tests/data/corpus/train-9a",
    "tests/data/corpus/train-9b",
)
DEFAULT_TEST = "tests/data/corpus/test"


def add_routing_commands(commands: Any) -> None:
    """Register ``correct`` and ``routing`` on the top-level subparsers of mailbot's CLI."""
    _add_correct(commands)
    routing = commands.add_parser("routing", help="the routing model: train, evaluate")
    sub = routing.add_subparsers(dest="routing_command", required=True)
    _add_train(sub)
    _add_evaluate(sub)


def _add_correct(commands: Any) -> None:
    correct = commands.add_parser(
        "correct", help="record an agent's re-route or re-categorisation of a tracked mail"
    )
    correct.add_argument("reference", help="tracking reference, e.g. SM-2026-000123")
    correct.add_argument("--service", required=True)
    correct.add_argument("--category", required=True)
    correct.add_argument("--reorient", help="target, with service autres-administrations")
    correct.add_argument(
        "--agent",
        help="agent id from agents.yaml (who corrected): a head of the message's service, as"
        " in the console; without it, the operator's correction (no agent recorded)",
    )
    correct.add_argument(
        "--transfer",
        action="store_true",
        help="to a new service, transfer the mail as the console's « Corriger » does: the"
        " forward to the service, the transfer notice to the citizen (needs --agent)",
    )
    correct.add_argument(
        "--reason",
        help="with --transfer: why, in the service's note (default: « correction de"
        " l'orientation »)",
    )
    correct.set_defaults(func=cmd_correct)


def _add_train(sub: Any) -> None:
    train = sub.add_parser("train", help="train a model on labelled mail and corrections")
    _data_options(train)
    train.add_argument(
        "--out",
        type=Path,
        help="model file (default: models/routing-<data hash>-<settings hash>.npz)",
    )
    train.add_argument(
        "--no-corrections", action="store_true", help="ignore the agents' corrections"
    )
    train.add_argument(
        "--c", type=float, help="inverse regularisation of the logistic regressions (default 200)"
    )
    train.add_argument(
        "--min-df", type=int, help="drop features seen in fewer training mails (default 2)"
    )
    train.add_argument(
        "--complaint-c", type=float, help="the complaint head's own C (default: --c's)"
    )
    train.add_argument(
        "--complaint-negatives",
        type=category_weights,
        help="the complaint head's negatives of these categories weigh more (the look-alikes:"
        " autre=2,plainte-riverain=2,intervention-prefet=2)",
    )
    train.add_argument(
        "--keep-service-from",
        type=Path,
        metavar="MODEL",
        help="keep all that decides the service (vocabulary, IDF, service and re-orientation"
        " heads, stacked service regression) from this model file, to the bit; refit only the"
        " category and complaint heads (every service decision and transfer stays MODEL's)",
    )
    _cache_option(train)
    train.set_defaults(func=cmd_train)


def _add_evaluate(sub: Any) -> None:
    evaluate = sub.add_parser("evaluate", help="confusion tables, precision and recall")
    _data_options(evaluate)
    evaluate.add_argument(
        "--test", type=Path, help=f"held-out labelled folder (default: {DEFAULT_TEST})"
    )
    evaluate.add_argument(
        "--no-test", action="store_true", help="the k-fold only (the held-out half not read)"
    )
    evaluate.add_argument(
        "--no-kfold",
        action="store_true",
        help="the configured model on the held-out folder only (e.g. a new writer's mails,"
        " scored once before they join the training data)",
    )
    evaluate.add_argument("--json", action="store_true", help="figures as one JSON object")
    _cache_option(evaluate)
    evaluate.set_defaults(func=cmd_evaluate)


def category_weights(text: str) -> dict[str, float]:
    """``autre=2,plainte-riverain=2`` → {"autre": 2.0, "plainte-riverain": 2.0} (argparse type)."""
    weights = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, sep, value = item.partition("=")
        try:
            weight = float(value)
        except ValueError:
            weight = -1.0
        if not sep or not name.strip() or weight <= 0:
            raise argparse.ArgumentTypeError(f"{item!r}: expected category=weight, weight > 0")
        weights[name.strip()] = weight
    if not weights:
        raise argparse.ArgumentTypeError("no category=weight given")
    return weights


def _cache_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cache",
        type=Path,
        help="folder keeping each fold model's answers: a second run with the same data and"
        " settings refits only the final model (scripts/tune_stacking.py shares it)",
    )


def _data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--labelled",
        type=Path,
        action="append",
        help="a folder of .eml files with labels.csv (repeatable; default: "
        + ", ".join(DEFAULT_LABELLED)
        + " beside rules.yaml)",
    )
    parser.add_argument("--folds", type=int, default=5, help="k of the k-fold (default 5)")
    parser.add_argument(
        "--folds-by",
        choices=["random", "source"],
        default="random",
        help="random: mails shuffled into the folds (default); source: each labelled folder"
        " (one writer) held out whole, as mail from a hand the model has never read",
    )


def cmd_correct(args: argparse.Namespace) -> int:
    """Record a correction; with ``--transfer``, the console's correction to another
    service (a transfer: notice, forward) instead. Without it a new service moves the mail
    to that service's queue and tells nobody, so the output says so. With ``--agent`` the
    use case refuses what the console would (only a head of the message's service
    corrects it); without, it is the operator's correction from the server's shell,
    allowed and recorded with no agent."""
    from mailbot.app.corrections import correct
    from mailbot.config import load_config
    from mailbot.store import Store

    if args.transfer:
        return _correct_and_transfer(args)
    if args.reason is not None:
        raise RequestError("reason", args.reason, "--reason goes with --transfer only")
    config = load_config(args.config)
    done = correct(
        config,
        Store(config.database),
        args.reference,
        args.service,
        args.category,
        args.reorient,
        args.agent,
    )
    old = "/".join(x or "-" for x in done.old)
    new = "/".join(x or "-" for x in done.new)
    print(f"{done.reference}: {old} -> {new} (recorded; nothing sent)")
    if done.old[0] != done.new[0]:
        print(
            f"{done.reference} is now in {done.new[0]}'s queue, but nothing was sent: the"
            " service was not forwarded the mail and the citizen was not told (use"
            " --transfer for that)"
        )
    return 0


def _correct_and_transfer(args: argparse.Namespace) -> int:
    """The console's « Corriger » (``corrections.correct_in_console``): to a new service,
    the transfer notice to the citizen and the forward to the service, queued with the
    correction in one transaction, then delivered; the same service, the correction only.
    Its refusals (an agent who is no head of the message's service, a message answered
    or closed, a service with no address) are the use case's; a re-orientation to another
    administration is no transfer."""
    from mailbot.app.context import build_app
    from mailbot.app.corrections import correct_in_console
    from mailbot.app.transfer import Transfers
    from mailbot.mail.originals import ImapOriginals

    if args.reorient is not None:
        raise RequestError(
            "reorient", args.reorient, "a re-orientation is not a transfer: drop --transfer"
        )
    if not args.agent:
        raise RequestError("agent", "", "--transfer needs --agent (named in the service's note)")
    app = build_app(args.config)
    transfers = Transfers(
        app.config, app.store, app.renderer, app.agent, ImapOriginals(app.config), app.clock
    )
    routed = (args.service, args.category)
    moved = correct_in_console(transfers, args.agent, args.reference, routed, args.reason or "")
    if not moved:
        print(f"{args.reference}: recorded; the service is unchanged, nothing sent")
        return 0
    print(f"{args.reference}: transferred to {args.service} (notice to the citizen, forward)")
    report = app.outbox.deliver_due()
    print(f"sent: {report.sent}, deferred: {report.retried}, failed: {report.failed}")
    return 0 if report.sent else 1


def _labelled_folders(args: argparse.Namespace) -> list[Path]:
    base = Path(args.config).resolve().parent
    folders: list[Path] = args.labelled or [base / name for name in DEFAULT_LABELLED]
    for folder in folders:
        if not (folder / "labels.csv").is_file():
            raise ConfigError(str(folder), "", "no labels.csv here (give --labelled FOLDER)")
    return folders


def _labelled(config: Config, args: argparse.Namespace) -> list[Any]:
    """The labelled mails in an order of their own (``training_samples.canonical``): the random
    folds are cut by position, so the folders' order on the command line would otherwise
    change the k-fold, the refusal and the model trained on the same data."""
    from mailbot.app.training_samples import canonical, load_labelled

    samples = []
    for folder in _labelled_folders(args):
        samples += load_labelled(config, folder, folder.name)
    return canonical(samples)


def _labelled_categories(args: argparse.Namespace) -> set[str]:
    """The categories of the labelled mails, read from their labels.csv alone: what
    ``_labelled``'s samples would hold, without parsing a mail (nor loading lingua)."""
    import csv

    found: set[str] = set()
    for folder in _labelled_folders(args):
        with (folder / "labels.csv").open(encoding="utf-8") as handle:
            found.update(row["category"] for row in csv.DictReader(handle))
    return found


def corrections_samples(config: Config) -> tuple[list[Any], int]:
    """The corrected mails, fetched again from IMAP; how many could not be fetched."""
    from mailbot.app.corrections import corrected_messages
    from mailbot.app.training_samples import Sample
    from mailbot.core import language
    from mailbot.core.facts import routing_input
    from mailbot.core.message import parse_message
    from mailbot.mail.imap import ImapMailbox
    from mailbot.mail.originals import refetch
    from mailbot.store import Store

    rows = corrected_messages(Store(config.database))
    samples, missing = [], 0
    # Citizens' mails read again: lingua keeps no hash of them beyond the retention.
    with language.unremembered():
        for mailbox in sorted({row.mailbox for row in rows}):
            box = config.mailboxes.get(mailbox)
            mine = [row for row in rows if row.mailbox == mailbox]
            if box is None:
                missing += len(mine)
                continue
            source = ImapMailbox(box.imap, name=mailbox)
            source.connect()
            try:
                for row in mine:
                    try:
                        raw = refetch(source, row).raw
                    except (MailGoneError, UnreadableMailError):
                        # Gone (or refused by the server): skipped, counted. A connection
                        # lost is the MailboxError it is: every later mail would be "gone".
                        missing += 1
                        continue
                    facts = routing_input(config, mailbox, parse_message(raw))
                    samples.append(
                        Sample(
                            row.reference or f"#{row.id}",
                            facts,
                            row.service,
                            row.category,
                            row.reorient or "",
                            "corrections",
                            # as the purge dates it: an INTERNALDATE to come, its recording
                            min(row.received_at, row.created_at),
                        )
                    )
            finally:
                source.close()
    return samples, missing


def cmd_train(args: argparse.Namespace) -> int:
    from mailbot import langcache
    from mailbot.app import kfold, model_fit, routing_scores, stacking, training
    from mailbot.config import load_config
    from mailbot.core import classifier

    config = load_config(args.config)
    langcache.remember_on_disk()  # the same corpus at every training
    if args.complaint_negatives:  # refused before the mails are read (seconds of parsing)
        unknown = set(args.complaint_negatives) - _labelled_categories(args)
        if unknown:
            raise ConfigError(
                "--complaint-negatives", ",".join(sorted(unknown)), "no such category in the data"
            )
    key: dict[str, Any] = {"c": model_fit.DEFAULT_C if args.c is None else args.c}
    if args.complaint_c:
        key["complaint_c"] = args.complaint_c
    if args.complaint_negatives:
        key["complaint_negatives"] = dict(sorted(args.complaint_negatives.items()))
    fit, key, kept = _fitter(args, key)  # a model to keep is read before the mails
    samples = _labelled(config, args)
    extra, missing = ([], 0) if args.no_corrections else corrections_samples(config)
    print(f"training data: {len(samples)} labelled mails, {len(extra)} corrections", end="")
    print(f" ({missing} corrected mails no longer on the server)" if missing else "")
    routing = training.base_routing(config)
    settings = training.settings_for(config)
    groups = kfold.groups_of(samples, args.folds_by)
    said = kfold.out_of_fold(samples, args.folds, extra, fit, args.cache, key, groups)
    header = model_fit.service_header(kept) if kept is not None else None
    combined, alone = kfold.cross_scores(
        samples, said, routing, settings, args.folds, groups=groups, header=header
    )
    print(
        f"{args.folds}-fold ({args.folds_by}) on the labelled mail"
        " (corrections always in training):"
    )
    print(_line("rules + model", combined))
    print(_line("rules alone  ", alone))
    worse = routing_scores.worse_than_rules(combined, alone)
    if worse:
        print(f"refused: the model makes {' and '.join(worse)} worse than the rules alone")
        return 1
    if kept is not None:  # the kept model's stacked regression, never refitted
        model = fit([*samples, *extra])
    else:
        model = stacking.stacked(
            fit([*samples, *extra]), stacking.fit_stacks(samples, said, routing)
        )
        model = replace(model, meta={**model.meta, "stack_folds": args.folds_by})
    trained_with = {**key, "folds": args.folds, "folds_by": args.folds_by}
    model = replace(model, meta={**model.meta, "train_settings": trained_with})
    name = model_fit.model_file_name(model, trained_with)
    out = args.out or Path(args.config).resolve().parent / "models" / name
    classifier.save(out, model.features, model.idf, model.heads, model.meta)
    _written(out, model, args, config.retention.days)
    return 0


def _written(out: Path, model: Any, args: argparse.Namespace, days: int) -> None:
    """What was written, the line to put in rules.yaml, and when to train again: the model
    holds what it learned of the corrected mails until then, the purge deletes the mails
    ``days`` after their receipt (``mailbot check`` and ``status`` say it once due)."""
    from datetime import timedelta

    from mailbot.core.classifier import corrected_mail

    print(f"model written: {out} ({out.stat().st_size // 1024} KiB, data {model.version})")
    print(f"to use it, set in rules.yaml:  routing.model.file: {_as_configured(out, args)}")
    said = corrected_mail(model.meta)
    if said is not None and said.oldest is not None and said.newest is not None:
        print(
            f"it learned from {said.mails} corrected mails received {said.oldest:%Y-%m-%d} to"
            f" {said.newest:%Y-%m-%d}; the purge deletes the oldest on"
            f" {said.oldest + timedelta(days=days):%Y-%m-%d} (retention.days {days}): train"
            " the model again then, so that it forgets it"
        )


def _as_configured(out: Path, args: argparse.Namespace) -> str:
    """``out`` as ``routing.model.file`` names it: relative to rules.yaml's folder (where
    a relative file is looked for: ``models/routing-….npz``, not the bare name), else
    absolute."""
    where, base = out.resolve(), Path(args.config).resolve().parent
    return where.relative_to(base).as_posix() if where.is_relative_to(base) else str(where)


def _fitter(args: argparse.Namespace, key: dict[str, Any]) -> tuple[Any, dict[str, Any], Any]:
    """(how a fold's model is fitted, its settings for ``--cache``, the kept model or None):
    ``model_fit.fit`` with ``--min-df``, or with ``--keep-service-from MODEL``
    ``model_fit.refit_heads`` over MODEL's vocabulary (``--min-df`` refused: it is MODEL's)."""
    from mailbot.app import model_fit
    from mailbot.core import classifier

    if args.keep_service_from is None:
        key = {**key, "min_df": model_fit.MIN_DF if args.min_df is None else args.min_df}
        return lambda chosen: model_fit.fit(chosen, **key), key, None
    if args.min_df is not None:
        raise ConfigError("--min-df", str(args.min_df), "the vocabulary is --keep-service-from's")
    kept = classifier.load(args.keep_service_from)
    options = dict(key)
    key = {**key, "keep_service_from": kept.meta.get("data_hash", "?")}
    return lambda chosen: model_fit.refit_heads(kept, chosen, **options), key, kept


def _line(label: str, scored: Any) -> str:
    precision, recall = scored.precision_recall("reclamation")
    return (
        f"  {label}  service {scored.accuracy('service'):.1%} (as recorded"
        f" {scored.accuracy('landed'):.1%})  category"
        f" {scored.accuracy('category'):.1%}  wrong transfers {scored.wrong_transfers}"
        f" ({scored.wrong_transfers / max(scored.count, 1):.1%})  to check"
        f" {sum(scored.to_check)}  complaint precision {precision:.1%} recall {recall:.1%}"
    )


def cmd_evaluate(args: argparse.Namespace) -> int:
    from mailbot import langcache
    from mailbot.config import load_config
    from mailbot.core.facts import compiled_routing

    if args.no_test and args.no_kfold:
        raise ConfigError("routing evaluate", "--no-kfold", "cannot go with --no-test")
    config = load_config(args.config)
    langcache.remember_on_disk()  # the same corpus at every evaluation
    routing = compiled_routing(config)
    if routing is None:
        raise ConfigError(str(args.config), "routing", "no routing section")
    result: dict[str, Any] = {"model": str(routing.model.path) if routing.model else None}
    lines = [f"model: {result['model'] or 'none (rules alone)'}"]
    if not args.no_kfold:
        lines += _evaluate_kfold(config, args, result)
    if not args.no_test:
        lines += _evaluate_held_out(config, routing, args, result)
    print(json.dumps(result, ensure_ascii=False) if args.json else "\n".join(lines))
    return 0


def _evaluate_kfold(config: Config, args: argparse.Namespace, result: dict[str, Any]) -> list[str]:
    from mailbot.app import kfold, model_fit, training
    from mailbot.app.routing_figures import figures, format_figures

    samples = _labelled(config, args)
    settings = training.settings_for(config)
    base = training.base_routing(config)
    groups = kfold.groups_of(samples, args.folds_by)
    key = {"c": model_fit.DEFAULT_C, "min_df": model_fit.MIN_DF}  # routing train's, for --cache
    combined, alone = kfold.cross_validate(
        samples, base, settings, args.folds, groups=groups, cache=args.cache, fit_key=key
    )
    by_source = combined.by_source()
    result.update(
        folds_by=args.folds_by,
        kfold=figures(combined),
        kfold_rules_alone=figures(alone),
        kfold_by_source={name: figures(part) for name, part in by_source.items()},
    )
    return [
        f"\n== {args.folds}-fold ({args.folds_by}) on {len(samples)} labelled mails"
        " (rules + model) ==",
        format_figures(combined),
        _line("rules alone", alone),
        *(_line(f"{name:<11} ({part.count:>3})", part) for name, part in by_source.items()),
    ]


def _evaluate_held_out(
    config: Config, routing: Any, args: argparse.Namespace, result: dict[str, Any]
) -> list[str]:
    from mailbot.app import routing_scores, training_samples
    from mailbot.app.routing_figures import figures, format_figures

    test = args.test or Path(args.config).resolve().parent / DEFAULT_TEST
    held = training_samples.load_labelled(config, test, test.name)
    on_test = routing_scores.score(held, routing)
    rules_test = routing_scores.score(held, routing_scores.with_model(routing, None, None))
    result.update(test=figures(on_test), test_rules_alone=figures(rules_test))
    return [
        f"\n== held-out {test} ({len(held)} mails, configured model) ==",
        format_figures(on_test),
        _line("rules alone", rules_test),
    ]
