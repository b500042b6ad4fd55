"""Round 6: the learned combiner (stacking) and the complaint regression, by nested k-fold.

    python scripts/tune_stacking.py [--folds 5] [--folds-by source] [--labelled DIR ...]
        [--cache DIR] [--cross] [--ship 1 [--model FILE]]

Training data only (``tune_routing.DEFAULT``); the frozen test half is never read.

Base models: one per outer fold f (trained on the other folds: its answers on f are the
out-of-fold answers) and one per pair of folds {f, g} (trained on the three others: its
answers on f and on g are the inner out-of-fold answers of the outer folds g and f). For
outer fold f, the combiner's regressions are trained on the inner answers of the other
folds (pair {f, g} on fold g) and scored on the outer model's answers on f; every bar
(hold to check per service, complaint) is chosen on those inner answers too. Nothing of
fold f chooses anything that is scored on fold f. The answers are cached on disk
(``--cache``): a fold model is fitted once per training set and fit settings.

``--cross``: no pair models (five fits instead of fifteen): each fold's out-of-fold answers
stand for the inner ones. ``--ship C``: the hold and complaint bars to put in rules.yaml,
chosen the same way on all folds. ``--stack-c 0`` scores the hand-set rule the same way.
Round 7: the complaint bars are chosen for 97 % precision on *each* inner group (``--worst``);
``--weights``, ``--stack-weights``, ``--language``, ``--margin``: the variants tried (PLAN.md).
Round 8: ``--folds-by source`` holds each labelled folder (one writer) out whole, so that
every figure and every bar is chosen as for mail from a hand the models have never read (a
random k-fold puts each writer's mails in every fold); ``--per-source`` prints each folder's
figures; ``--complaint-c``, ``--complaint-negatives``: the complaint head refitted alone (its own
C; its negatives of some categories weighing more). ``--ship`` checks the guide's cases of
tests/test_routing.py with the model to ship (``--model``, else fitted here) and raises a hold
bar that would move one to the wrong service (``guarded``); it refuses (exit 1) when no bar can.
Round 10: ``--category-weights`` (the category head refitted alone, its mails of some
categories weighing more), ``--stack service,category`` (the category stacked too), and with
``--per-source`` the category's most frequent confusions. Round 11: ``--pool train-8a,…`` the
figures of some folders pooled, with counts (its ship rule), as ``--per-source`` prints them too.
Round 12: ``--keep-service-from MODEL`` (``routing train``'s): each fold's category and complaint
heads refitted over MODEL's vocabulary and IDF, all the service part MODEL's (its heads, its
stacked regression, rules.yaml's hold bars: never chosen here); the complaint bars chosen as before.
Which decisions are stacked: ``training.STACKED``. Round 6's figures: tests/data/corpus/PLAN.md.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import tune_routing  # noqa: E402

from mailbot.app import training  # noqa: E402
from mailbot.config import load_config  # noqa: E402
from mailbot.core import classifier, combine  # noqa: E402
from mailbot.core.routing import decide  # noqa: E402
from mailbot.routing_commands import category_weights  # noqa: E402


def answers(
    samples: Sequence[Any], held: Sequence[int], fit: dict[str, Any], cache: Path
) -> dict[int, Any]:
    """The answers (head → Prediction) on ``held`` of a model trained on all the others, kept
    in ``cache`` (``training.held_answers``: ``routing train --cache`` reads the same files);
    with ``KEPT``, its service part and the other heads refitted (``training.refit_heads``)."""

    def train(kept: Sequence[Any]) -> Any:
        print(f"  fitting without {len(held)} mails", flush=True)
        if KEPT is not None:
            return training.refit_heads(KEPT, kept, **fit)
        return training.fit(kept, **fit)

    key = {**fit, "keep_service_from": KEPT.meta["data_hash"]} if KEPT is not None else fit
    return training.held_answers(samples, held, train, (), cache, key)


def all_answers(
    samples: Sequence[Any], k: int, fit: dict[str, Any], cache: Path, nested: bool = True
) -> tuple[dict[int, Any], dict[tuple[int, int], dict[int, Any]]]:
    """(outer: each mail's answer by its fold's model; inner: per (f, g), the answers on
    fold g of the model trained without folds f and g)."""
    folds = tune_routing.fold_plan(samples, k)
    outer: dict[int, Any] = {}
    for held in folds:
        outer.update(answers(samples, held, fit, cache))
    inner: dict[tuple[int, int], dict[int, Any]] = {}
    if nested:
        for f, g in itertools.combinations(range(k), 2):
            both = answers(samples, folds[f] + folds[g], fit, cache)
            inner[f, g] = {i: both[i] for i in folds[g]}
            inner[g, f] = {i: both[i] for i in folds[f]}
    return outer, inner


MIN_INNER_PRECISION = 0.98  # the complaint bars are chosen for this precision on inner answers
# Round 7: the complaint bars keep this precision on every inner group (the worst of the four
# folds that choose, not the pooled figure: round 6's pooled 98 % let one fold fall to 93 %);
# None: round 6's rule (pooled, ``MIN_INNER_PRECISION``).
WORST_INNER_PRECISION: float | None = 0.97
STACK_KINDS: dict[str, tuple[str, ...]] | None = None  # the stacked inputs (None: training's)
STACK_WEIGHTS: dict[str, float] | None = None  # per-source weights of the stacked regressions
STACK_NAMES: tuple[str, ...] | None = None  # the stacked decisions (None: training.STACKED)
TUNE_COMPLAINT = True  # False: the complaint bars as given (service experiments, faster)
MARGIN = False  # a move's confidence: its probability's lead over the mailbox's service
PER_SOURCE = False  # the figures of each source folder printed too (``--per-source``)
POOL: tuple[str, ...] = ()  # source folders whose figures are printed pooled (``--pool``)
KEPT: Any = None  # round 12: the model whose service part is kept (``--keep-service-from``)
# Round 7: a third of round 6's grid (the machine is shared); round 6 chose
# complaint_min_confidence 0 on every fold, complaint_model_min 0.3-0.5, sure 0.7-0.8.
COMPLAINT_GRID: dict[str, list[Any]] = {
    "complaint_min_confidence": [0.0],
    "complaint_model_min": [0.3, 0.4, 0.5, 0.6, 0.7, 0.8],
    "complaint_model_sure": [0.7, 0.8, 0.9, None],
}


def move_rows(
    samples: Sequence[Any], parts: Sequence[tuple[Sequence[int], Any]], routing: Any, settings: Any
) -> list[Any]:
    """``tune_routing.moves``'s rows (fold, service, confidence, right, moved, own right)."""
    unheld = settings.model_copy(update={"min_confidence": 0.0, "min_confidence_by_service": {}})
    rows = []
    for index, (held, model) in enumerate(parts):
        fold = training.with_model(routing, model, unheld)
        for i in held:
            decision = decide(samples[i].facts, fold)
            own = routing.own_service.get(samples[i].facts.mailbox)
            right = samples[i].service == decision.service
            moved = decision.service != own
            confidence = decision.confidence["service"]
            rows.append(
                (index, decision.service, confidence, right, moved, samples[i].service == own)
            )
    return rows


def complaint_choice(
    samples: Sequence[Any], parts: Sequence[tuple[Sequence[int], Any]], routing: Any, settings: Any
) -> dict[str, Any]:
    """The complaint bars with the best recall at ``MIN_INNER_PRECISION`` or more (none: the
    most precise)."""
    best: tuple[Any, ...] | None = None
    sizes = [len(held) for held, _ in parts]
    for combo in itertools.product(*COMPLAINT_GRID.values()):
        values = dict(zip(COMPLAINT_GRID, combo, strict=True))
        sure, low = values["complaint_model_sure"], values["complaint_model_min"]
        if sure is not None and sure <= low:
            continue
        scored = tune_routing.scored_parts(
            samples, parts, routing, settings.model_copy(update=values)
        )
        precision, recall = scored.precision_recall("reclamation")
        bar = MIN_INNER_PRECISION
        if WORST_INNER_PRECISION is not None:
            precision, bar = worst_precision(scored.categories, sizes), WORST_INNER_PRECISION
        key = (precision >= bar, recall if precision >= bar else precision, precision)
        if best is None or key > best[0]:
            best = (key, values)
    assert best is not None
    return best[1]


def worst_precision(pairs: Sequence[tuple[str, str]], sizes: Sequence[int]) -> float:
    """The complaint precision of the worst of consecutive groups of ``sizes`` mails."""
    worst, start = 1.0, 0
    for size in sizes:
        part = pairs[start : start + size]
        start += size
        decided = sum(g == "reclamation" for _, g in part)
        right = sum(e == g == "reclamation" for e, g in part)
        worst = min(worst, right / decided if decided else 1.0)
    return worst


def with_stacks(
    samples: Sequence[Any],
    said: dict[int, Any],
    routing: Any,
    stack_c: float | None,
) -> dict[str, Any]:
    """A header: the stacked regressions trained on ``said`` (None: the hand-set rule;
    ``KEPT``'s, never refitted, when its service part is kept)."""
    if KEPT is not None:
        return training.service_header(KEPT)
    if stack_c is None:
        return {}
    stacks = training.fit_stacks(
        samples,
        said,
        routing,
        c=stack_c,
        names=STACK_NAMES or training.STACKED,
        kinds=STACK_KINDS,
        source_weights=STACK_WEIGHTS,
    )
    return {"stack": stacks, **({"hold_on": "margin"} if MARGIN else {})}


def choose(
    samples: Sequence[Any],
    groups: dict[int, list[int]],
    answers_of: dict[int, dict[int, Any]],
    routing: Any,
    settings: Any,
    stack_c: float | None,
) -> Any:
    """Hold and complaint bars chosen on the groups' answers, each group's stacked regressions
    trained on the other groups' answers (cross-fitted): the settings to apply elsewhere."""
    parts = []
    for g, held in groups.items():
        others = {i: a for h, said in answers_of.items() if h != g for i, a in said.items()}
        parts.append(
            (
                held,
                training.answered(
                    samples, answers_of[g], with_stacks(samples, others, routing, stack_c)
                ),
            )
        )
    chosen = settings  # with KEPT: its hold bars, as rules.yaml has them
    if KEPT is None:
        rows = move_rows(samples, parts, routing, settings)
        n = sum(len(h) for h in groups.values())
        bars = tune_routing.choose_bars(rows, tune_routing.BAR_BUDGET * n)
        update = {"min_confidence_by_service": bars, "min_confidence": 0.5}
        chosen = settings.model_copy(update=update)
    if not TUNE_COMPLAINT:
        return chosen
    return chosen.model_copy(update=complaint_choice(samples, parts, routing, chosen))


def nested(
    samples: Sequence[Any],
    k: int,
    outer: dict[int, Any],
    inner: dict[tuple[int, int], dict[int, Any]],
    routing: Any,
    settings: Any,
    stack_c: float | None,
) -> tuple[Any, list[Any]]:
    """The nested k-fold: per outer fold, regressions and bars from the inner answers only."""
    folds = tune_routing.fold_plan(samples, k)
    parts, chosen = [], []
    for f in range(k):
        groups = {g: folds[g] for g in range(k) if g != f}
        answers_of = {g: inner[f, g] for g in groups}
        picked = choose(samples, groups, answers_of, routing, settings, stack_c)
        everything = {i: a for said in answers_of.values() for i, a in said.items()}
        meta = with_stacks(samples, everything, routing, stack_c)
        model = training.answered(samples, {i: outer[i] for i in folds[f]}, meta)
        parts.append((f, model, picked))
        chosen.append(picked)
    scored = training.Scored()
    for f, model, picked in parts:
        part = tune_routing.scored_parts(samples, [(folds[f], model)], routing, picked)
        for name in training.SCORED_FIELDS:
            getattr(scored, name).extend(getattr(part, name))
    return scored, chosen


def report(label: str, samples: Sequence[Any], k: int, scored: Any) -> None:
    print(tune_routing.Result(label, scored).line())
    print("  " + tune_routing.per_fold(samples, k, scored), flush=True)
    worst = min_fold_precision(samples, k, scored)
    print(f"  complaint precision, worst fold {worst:.1%}", flush=True)
    if PER_SOURCE:  # round 10: the category's most frequent confusions, expected → decided
        wrong = Counter((e, g) for e, g in scored.categories if e != g)
        print(
            "  category confusions: "
            + ", ".join(f"{e}→{g} {n}" for (e, g), n in wrong.most_common(6))
        )


def min_fold_precision(samples: Sequence[Any], k: int, scored: Any) -> float:
    start, worst = 0, 1.0
    for held in tune_routing.fold_plan(samples, k):
        pairs = scored.categories[start : start + len(held)]
        start += len(held)
        tp = sum(e == g == "reclamation" for e, g in pairs)
        decided = sum(g == "reclamation" for _, g in pairs)
        worst = min(worst, tp / decided if decided else 1.0)
    return worst


def load_samples(folders: Sequence[str]) -> tuple[Any, list[Any]]:
    config = load_config(ROOT / "rules.yaml")
    assert not any("corpus/test" in f for f in folders), "the test half is never for tuning"
    samples = [s for f in folders for s in training.load_labelled(config, ROOT / f, f)]
    return config, training.canonical(samples)  # routing train's order: its folds, its cache


# Round 5's shipped settings (model routing-467593fb7a3f), the hand-set rule's reference.
ROUND5 = {
    "rule_weight": 0.7,
    "rule_damping": 20.0,
    "default_share": 0.3,
    "min_confidence": 0.64,
    "min_confidence_by_service": {
        "autres-administrations": 0.54,
        "cabinet": 0.48,
        "cartes-grises": 0.64,
        "cni-passeport": 0.64,
        "etrangers": 0.74,
        "general": 0.4,
        "permis": 0.62,
        "qualite-accueil": 0.68,
    },
    "complaint_min_confidence": 0.2,
    "complaint_model_min": 0.3,
    "complaint_model_sure": 0.7,
}


def by_source(scored: Any, old: Sequence[str]) -> None:
    """The figures of the mails of ``old`` folders and of the others apart, then (``--per-source``)
    of each source folder."""
    olds = {Path(name).name for name in old}
    groups = [
        ("older folders", [s in olds for s in scored.sources]),
        ("new folders", [s not in olds for s in scored.sources]),
        ("dev half", [s == "dev" for s in scored.sources]),
    ]
    if PER_SOURCE:
        names = sorted(set(scored.sources))
        groups += [(name, [s == name for s in scored.sources]) for name in names]
    if POOL:
        groups.append((",".join(POOL), [s in POOL for s in scored.sources]))
    for name, keep in groups:
        part = scored.part(keep)
        if part.count:
            print(tune_routing.Result(f"  {name} ({part.count})", part).line())
            if PER_SOURCE or POOL:
                print("    " + counts(part))


def counts(part: Any) -> str:
    """A part's figures as counts (round 11's ship rule pools folders: exact sums, not means)."""
    right = sum(e == g for e, g in part.services)
    landed = sum(e == g for e, g in part.landed)
    category = sum(e == g for e, g in part.categories)
    tp = sum(e == g == "reclamation" for e, g in part.categories)
    decided = sum(g == "reclamation" for _, g in part.categories)
    expected = sum(e == "reclamation" for e, _ in part.categories)
    return (
        f"counts: decided {right}/{part.count}, as recorded {landed}, category {category}, "
        f"wrong {part.wrong_transfers}, held {sum(part.to_check)}, "
        f"complaint {tp}/{decided} decided, {tp}/{expected} expected"
    )


def shipped_bars(
    samples: Sequence[Any],
    k: int,
    outer: dict[int, Any],
    routing: Any,
    settings: Any,
    c: float,
    model: Any,
) -> bool:
    """The bars to ship: chosen on all folds' cross-fitted answers, as ``nested`` does inside,
    then raised where they would move one of the guide's cases (``guarded``, with ``model``,
    the one to ship). False: a guide case no bar can keep (refused)."""
    folds = tune_routing.fold_plan(samples, k)
    groups = dict(enumerate(folds))
    answers_of = {g: {i: outer[i] for i in held} for g, held in groups.items()}
    picked = choose(samples, groups, answers_of, routing, settings, c)
    print(f"\nbars {'kept' if KEPT is not None else 'chosen on all folds'}:")
    print(f"  min_confidence_by_service: {picked.min_confidence_by_service}")
    kept = guarded(routing, model, picked, tune_routing.guide_cases())
    if kept is None:
        return False
    print("\nshipped bars (the guide's cases of tests/test_routing.py decided as written):")
    print(f"  min_confidence_by_service: {kept.min_confidence_by_service}")
    print("  " + str({n: getattr(kept, n) for n in tune_routing.CATEGORY_PART}), flush=True)
    return True


def guarded(routing: Any, model: Any, settings: Any, cases: Sequence[Any]) -> Any:
    """``settings`` with the hold bars raised until ``model`` decides every guide case as
    written: a case moved to the wrong service by a sure decision gets that service's bar
    raised to the least step of ``tune_routing.BAR_GRID`` above its confidence (below the
    bar, the hand-set rule decides and holds a move to check). None, and the cases printed,
    when a case stays wrong whatever the bars (a category, or a move no bar holds)."""
    for _ in range(len(cases) + 1):
        shipped = training.with_model(routing, model, settings)
        wrong = [
            (facts, want, decision)
            for facts, *want in cases
            for decision in [decide(facts, shipped)]
            if [decision.service, decision.category] != want
        ]
        bars = dict(settings.min_confidence_by_service)
        for facts, want, decision in wrong:
            confidence = decision.confidence["service"]
            if decision.service != want[0] and confidence >= combine.hold_bar(
                settings, decision.service
            ):
                bar = bars.get(decision.service, settings.min_confidence)
                bar = max(bar, raised_bar(confidence))
                bars[decision.service] = bar
                print(
                    f"  raised {decision.service} to {bars[decision.service]}: a guide case"
                    f" ({facts.mailbox}: {facts.subject!r}) moved there at {confidence}"
                )
        if not wrong:
            return settings
        if bars == settings.min_confidence_by_service:
            for facts, want, decision in wrong:
                print(
                    f"refused: guide case ({facts.mailbox}: {facts.subject!r}) decided"
                    f" {decision.service}/{decision.category}, expected {'/'.join(want)}"
                )
            return None
        settings = settings.model_copy(update={"min_confidence_by_service": bars})
    return None


def raised_bar(confidence: float) -> float:
    """The least bar of the grid above ``confidence`` (1.01 above the grid: never moved)."""
    return next((bar for bar in tune_routing.BAR_GRID if bar > confidence), 1.01)


def final_model(
    samples: Sequence[Any], fit: dict[str, Any], outer: dict[int, Any], routing: Any, cache: Path
) -> Any:
    """The model ``routing train`` ships for these samples: fitted on all of them (kept in
    ``cache``), with the stacked regressions trained on the folds' answers ``outer``."""
    import pickle

    if KEPT is not None:  # its stacked regression kept: nothing fitted on the folds' answers
        print("  fitting the final heads on all mails", flush=True)
        return training.refit_heads(KEPT, samples, **fit)
    key = training.training_hash(samples) + repr(sorted(fit.items()))
    path = cache / f"final-{hashlib.sha256(key.encode()).hexdigest()[:16]}.pkl"
    if path.exists():
        with path.open("rb") as handle:
            base = pickle.load(handle)
    else:
        print("  fitting the final model on all mails", flush=True)
        base = training.fit(samples, **fit)
        with path.open("wb") as handle:
            pickle.dump(base, handle)
    return training.stacked(base, training.fit_stacks(samples, outer, routing))


def with_complaint_head(
    samples: Sequence[Any], args: Any, fit: dict[str, Any], outer: dict[int, Any]
) -> dict[int, Any]:
    """The folds' answers with the complaint head refitted alone (round 8: its own C, or its
    negatives of some categories weighing more), the other heads' answers as they were."""
    head_fit = {
        **fit,
        "complaint_c": args.complaint_c,
        "complaint_negatives": args.complaint_negatives,
        "only": ("complaint",),
    }
    return with_head(samples, args, head_fit, outer, "complaint")


def with_category_head(
    samples: Sequence[Any], args: Any, fit: dict[str, Any], outer: dict[int, Any]
) -> dict[int, Any]:
    """The folds' answers with the category head refitted alone, its mails of some
    categories weighing more (round 10: ``--category-weights information=2``)."""
    head_fit = {**fit, "category_weights": args.category_weights, "only": ("category",)}
    return with_head(samples, args, head_fit, outer, "category")


def with_head(
    samples: Sequence[Any], args: Any, head_fit: dict[str, Any], outer: dict[int, Any], head: str
) -> dict[int, Any]:
    found = dict(outer)
    for held in tune_routing.fold_plan(samples, args.folds):
        said = answers(samples, held, head_fit, args.cache)
        for i in held:
            found[i] = {**found[i], head: said[i][head]}
    return found


def weights_of(text: str) -> dict[str, float]:
    """``dev=2,routing=0.5`` → {"dev": 2.0, "routing": 0.5} (a source folder's last name)."""
    pairs = (item.split("=") for item in text.split(",") if item)
    return {name.strip(): float(value) for name, value in pairs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--labelled", action="append", default=None)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/mailbot-stacking"))
    parser.add_argument("--answers-only", action="store_true")
    parser.add_argument(
        "--stack-c", type=float, action="append", help="0: the hand-set rule (default: a grid)"
    )
    parser.add_argument(
        "--cross",
        action="store_true",
        help="outer models only: inner answers are the other folds' out-of-fold answers",
    )
    parser.add_argument("--ship", type=float, help="print the bars to ship for this stack C")
    parser.add_argument(
        "--model",
        type=Path,
        help="with --ship: the model file to ship, which decides the guide's cases (default:"
        " fitted on all mails, its stacked regressions on the folds' answers)",
    )
    parser.add_argument(
        "--budget",
        type=float,
        help=f"wrong transfers the hold bars allow ({tune_routing.BAR_BUDGET})",
    )
    parser.add_argument(
        "--weights", type=weights_of, help="the base model's per-source weights: dev=2,routing=0.5"
    )
    parser.add_argument("--stack-weights", type=weights_of, help="the same for the regressions")
    parser.add_argument(
        "--language",
        choices=["flag", "full"],
        help="a foreign-language input to the service regression (full: and its head's answers)",
    )
    parser.add_argument(
        "--worst",
        type=float,
        help="complaint bars for this precision on every inner group (default 0.97;"
        " 0: round 6's pooled 98 %%)",
    )
    parser.add_argument(
        "--margin", action="store_true", help="hold bars on the lead over the mailbox's service"
    )
    parser.add_argument(
        "--complaint-as",
        type=weights_of,
        help="no complaint bars chosen: these (complaint_model_min=0.4,...) for every fold",
    )
    parser.add_argument("--skip-round5", action="store_true", help="skip round 5's line")
    parser.add_argument(
        "--folds-by",
        choices=["random", "source"],
        default="random",
        help="source: each labelled folder (one writer) held out whole (round 8)",
    )
    parser.add_argument("--per-source", action="store_true", help="figures per source folder")
    parser.add_argument(
        "--pool", help="source folders (names, comma-separated) whose figures are pooled, as counts"
    )
    parser.add_argument("--complaint-c", type=float, help="the complaint head's own C")
    parser.add_argument("--c", type=float, help=f"the heads' C (default {training.DEFAULT_C})")
    parser.add_argument(
        "--complaint-negatives",
        type=category_weights,
        help="the complaint head's negatives of these categories weigh more:"
        " etat-avancement=2,rendez-vous=2",
    )
    parser.add_argument(
        "--stack",
        help="the decisions stacked, comma-separated (default: training.STACKED, the service);"
        " round 10: service,category",
    )
    parser.add_argument(
        "--category-weights",
        type=category_weights,
        help="the category head's mails of these categories weigh more: information=2",
    )
    parser.add_argument(
        "--keep-service-from",
        type=Path,
        metavar="MODEL",
        help="round 12: MODEL's service part kept (heads, stack, rules.yaml's hold bars); the"
        " category and complaint heads refitted per fold over its vocabulary",
    )
    parser.add_argument(
        "--default-share",
        type=float,
        help="the hand-set rule's share of the mailbox's own service when no rule fires"
        " (default: round 5's 0.3)",
    )
    args = parser.parse_args()
    refits = (args.complaint_c, args.complaint_negatives, args.category_weights, args.weights)
    if args.keep_service_from and any(refits):
        parser.error("--keep-service-from refits with routing train's settings only")
    tune_routing.FOLDS_BY = args.folds_by
    global STACK_KINDS, STACK_WEIGHTS, WORST_INNER_PRECISION, MARGIN, TUNE_COMPLAINT, PER_SOURCE
    global STACK_NAMES, POOL, KEPT
    STACK_NAMES = tuple(args.stack.split(",")) if args.stack else None
    POOL = tuple(args.pool.split(",")) if args.pool else ()
    PER_SOURCE = args.per_source
    MARGIN, TUNE_COMPLAINT = args.margin, args.complaint_as is None
    if args.budget is not None:
        tune_routing.BAR_BUDGET = args.budget
    if args.language:
        extra = ("language",) if args.language == "flag" else ("language", "foreign_service")
        service = (*training.STACK_INPUTS["service"], *extra)
        STACK_KINDS = {**training.STACK_INPUTS, "service": service}
    STACK_WEIGHTS = args.stack_weights
    if args.worst is not None:
        WORST_INNER_PRECISION = args.worst or None
    config, samples = load_samples(args.labelled or tune_routing.DEFAULT)
    # the figures of the folders of the round before and of the new ones, apart
    old = tune_routing.ROUND5 if len(samples) < 2000 else tune_routing.ROUND6
    old = tune_routing.ROUND7 if len(samples) > 2867 else old
    old = tune_routing.ROUND8 if len(samples) > 3317 else old
    old = tune_routing.ROUND9 if len(samples) > 3677 else old
    old = tune_routing.ROUND10 if len(samples) > 4037 else old
    fit: dict[str, Any] = {"c": args.c or training.DEFAULT_C, "min_df": training.MIN_DF}
    if args.keep_service_from:  # routing train --keep-service-from's fit (and cache key)
        KEPT, fit = classifier.load(args.keep_service_from), {"c": fit["c"]}
    if args.weights:
        fit["source_weights"] = args.weights
    print(f"{len(samples)} training mails; {args.folds}-fold", flush=True)
    outer, inner = all_answers(samples, args.folds, fit, args.cache, nested=not args.cross)
    if args.complaint_c or args.complaint_negatives:
        outer = with_complaint_head(samples, args, fit, outer)
    if args.category_weights:
        outer = with_category_head(samples, args, fit, outer)
    if args.answers_only:
        return
    routing = training.base_routing(config)
    tune_routing.remember_tallies()
    base = training.settings_for(config)
    if KEPT is None:  # kept: rules.yaml's service bars and shares stay as they are
        base = base.model_copy(update=ROUND5)
    if args.default_share is not None:
        base = base.model_copy(update={"default_share": args.default_share})
    if args.complaint_as:
        sure = args.complaint_as.get("complaint_model_sure", -1)
        base = base.model_copy(
            update={**args.complaint_as, "complaint_model_sure": None if sure < 0 else sure}
        )
    k = args.folds
    folds = tune_routing.fold_plan(samples, k)
    if args.cross:
        inner = {(f, g): {i: outer[i] for i in folds[g]} for f in range(k) for g in range(k)}
    if args.ship is not None:
        if args.model:
            model = classifier.load(args.model)
        else:
            model = final_model(samples, fit, outer, routing, args.cache)
        if not shipped_bars(samples, k, outer, routing, base, args.ship, model):
            sys.exit(1)
        return
    if not args.skip_round5:
        replayed = [training.answered(samples, {i: outer[i] for i in h}, {}) for h in folds]
        as_shipped = tune_routing.kfold(samples, replayed, routing, base)
        report("round 5 as shipped (bars chosen on all folds)", samples, k, as_shipped)
        by_source(as_shipped, old)
    for value in args.stack_c or [0.0, 0.1, 1.0, 10.0]:
        stack_c = value if value > 0 else None  # 0: the hand-set combination
        scored, chosen = nested(samples, k, outer, inner, routing, base, stack_c)
        report(
            f"{'cross-fitted' if args.cross else 'nested'}, stack C={stack_c}", samples, k, scored
        )
        by_source(scored, old)
        for picked in chosen:
            print("   ", {n: getattr(picked, n) for n in tune_routing.CATEGORY_PART})


if __name__ == "__main__":
    main()
