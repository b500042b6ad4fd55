"""Routing speed: model load time, and classification time per mail once loaded.

    python bench/routing.py [--repeat 5]
    python bench/routing.py --trees OLD,NEW [--repeat 5]

Reads the labelled mails (the dev half of the corpus and the regression set; parsing is not
timed), then times, each ``--repeat`` times and keeping the median:

* loading the configured model file (numpy, no scikit-learn), in this process and in a
  fresh ``python -c`` (import included) — target ≤ 1 s;
* the model alone on each mail (features + the linear heads);
* the whole routing decision (every rule, the model, the combination) — target ≤ 2 ms;
* before/after the one-pass keyword matcher (issue 14, point 5): the rules as they were
  (``tests/routing_reference.py``) and as they are, alone and with the model, on short
  bodies (each mail cut to 300 characters) and on 3 KB bodies (mails run together), in
  the same run;
* before/after the vectorised model (issue 14, point 5): the model's features and heads
  as they were (``tests/classifier_reference.py``: a CRC-32 per n-gram, a Counter, a
  binary search per feature, the text folded again) and as they are, alone and in the
  whole decision, short and 3 KB, in the same run.

Times are CPU time (``time.process_time``), the median of ``--repeat`` runs.

With ``--trees`` (source trees, e.g. a ``git archive`` export of main and this checkout),
each tree runs in a child process with that tree on PYTHONPATH and its own rules.yaml and
model, on this tree's labelled mails, the trees taking turns ``--repeat`` times (a shared
machine speeds up and slows down over minutes): load, the model alone and the whole
decision on the labelled mails, short (300 characters) and 3 KB bodies, and on the short
and 3 KB bodies the decision's parts (the rules alone, the model's TF-IDF vector from the
words, the heads' logits from the vector); medians per tree and the last/first ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import classifier_reference  # noqa: E402
import routing_reference  # noqa: E402

from mailbot.app.training import load_labelled  # noqa: E402
from mailbot.config import load_config  # noqa: E402
from mailbot.core.classifier import Classifier, Prediction, load  # noqa: E402
from mailbot.core.facts import compiled_routing  # noqa: E402
from mailbot.core.routing import CompiledRouting, RoutingInput, compile_routing, decide  # noqa: E402
from mailbot.core.routing_text import RoutingText  # noqa: E402

CHILD = r"""
import json, statistics, sys, time
from dataclasses import replace
from pathlib import Path
tree, data, repeat = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
from mailbot.app.training import load_labelled
from mailbot.config import load_config
from mailbot.core.classifier import load, model_text
from mailbot.core.facts import compiled_routing
from mailbot.core.routing import decide
from mailbot.core.routing_text import RoutingText
config = load_config(tree / "rules.yaml")
routing = compiled_routing(config)
start = time.process_time()
for _ in range(repeat):
    load(config.routing.model.file)
out = {"load": (time.process_time() - start) / repeat * 1000}
mails = [s.facts for f in ("corpus/dev", "routing") for s in load_labelled(config, data / f)]

def sized(size):
    bodies, out = [m.body for m in mails], []
    for i, mail in enumerate(mails):
        body, j = mail.body, i
        while len(body) < size:
            j += 1
            body += "\n\n" + bodies[j % len(bodies)]
        out.append(replace(mail, body=body[:size]))
    return out

def per_mail(run, batch):
    for mail in batch:
        run(mail)  # warm-up: caches filled once, as in a worker
    times = []
    for _ in range(repeat):
        start = time.process_time()
        for mail in batch:
            run(mail)
        times.append((time.process_time() - start) / len(batch) * 1000)
    return statistics.median(times)

model = routing.model
alone = lambda m: model.classify(m.subject, RoutingText(m.body, m.quoted))
whole = lambda m: decide(m, routing)
rules = replace(routing, model=None)
for label, batch in (("labelled", mails), ("short", sized(300)), ("3k", sized(3000))):
    out[f"model {label}"] = per_mail(alone, batch)
    out[f"decision {label}"] = per_mail(whole, batch)
    if label == "labelled":
        continue
    # the decision's parts, each on inputs made before: the rules alone (no model), the
    # model's TF-IDF vector from the words, the heads' logits from the vector
    out[f"  rules {label}"] = per_mail(lambda m: decide(m, rules), batch)
    words = {id(m): model_text(m.subject, RoutingText(m.body, m.quoted)) for m in batch}
    out[f"  vector {label}"] = per_mail(lambda m: model.vector(*words[id(m)]), batch)
    vectors = {id(m): model.vector(*words[id(m)]) for m in batch}
    out[f"  heads {label}"] = per_mail(lambda m: model.heads_logits(*vectors[id(m)]), batch)
print(json.dumps(out))
"""


def trees(paths: list[Path], repeat: int) -> None:
    """Each tree in a child process, the trees taking turns; medians and new/old ratio."""
    runs: dict[Path, list[dict[str, float]]] = {tree: [] for tree in paths}
    for _ in range(repeat):
        for tree in paths:
            env = {**os.environ, "PYTHONPATH": str(tree)}
            argv = [sys.executable, "-c", CHILD, str(tree), str(ROOT / "tests/data"), "3"]
            done = subprocess.run(
                argv, capture_output=True, text=True, check=True, env=env, cwd=tree
            )
            runs[tree].append(json.loads(done.stdout))
    keys = list(runs[paths[0]][0])
    print(f"CPU ms ({repeat} turns per tree, median; each turn the median of 3 passes)")
    print(f"{'':22}" + "".join(f"{tree.name[-14:]:>15}" for tree in paths) + "    new/old")
    for key in keys:
        figures = [statistics.median(run[key] for run in runs[tree]) for tree in paths]
        ratio = f"{figures[-1] / figures[0]:10.2f}" if len(paths) > 1 else ""
        print(f"{key:22}" + "".join(f"{x:15.3f}" for x in figures) + ratio)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--trees", help="source trees, comma-separated (old first)")
    args = parser.parse_args()
    if args.trees:
        trees([Path(t).resolve() for t in args.trees.split(",")], args.repeat)
        return
    config = load_config(ROOT / "rules.yaml")
    assert config.routing is not None and config.routing.model is not None
    path = config.routing.model.file
    loads = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        model = load(path)
        loads.append(time.perf_counter() - start)
    fresh = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import time; t=time.perf_counter(); from mailbot.core.classifier "
            f"import load; load(__import__('pathlib').Path({str(path)!r})); "
            f"print(time.perf_counter()-t)",
        ],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(ROOT)},
    )
    samples = [
        *load_labelled(config, ROOT / "tests/data/corpus/dev"),
        *load_labelled(config, ROOT / "tests/data/routing"),
    ]
    routing = compiled_routing(config)
    assert routing is not None
    for sample in samples:  # warm-up: regex compilation is done, caches filled once
        decide(sample.facts, routing)
    model_runs, decide_runs = [], []
    for _ in range(args.repeat):
        start = time.process_time()
        for s in samples:
            model.classify(s.facts.subject, RoutingText(s.facts.body, s.facts.quoted))
        model_runs.append((time.process_time() - start) / len(samples))
        start = time.process_time()
        for s in samples:
            decide(s.facts, routing)
        decide_runs.append((time.process_time() - start) / len(samples))
    size = path.stat().st_size / 1024
    print(f"model {path.name}: {size:.0f} KiB, {len(model.features)} features")
    print(f"load (in process, median of {args.repeat}): {statistics.median(loads) * 1000:.1f} ms")
    print(f"load (fresh interpreter, imports included): {float(fresh.stdout) * 1000:.1f} ms")
    print(
        f"model alone per mail ({len(samples)} mails): "
        f"{statistics.median(model_runs) * 1000:.3f} ms"
    )
    print(
        f"whole decision per mail (rules + model + combination): "
        f"{statistics.median(decide_runs) * 1000:.3f} ms"
    )
    compare(config, routing, [s.facts for s in samples], args.repeat)
    compare_model(config, routing, [s.facts for s in samples], args.repeat)


def sized(mails: list[RoutingInput], size: int) -> list[RoutingInput]:
    """Each mail with a body of ``size`` characters: cut, or run on with the next mails'."""
    bodies = [m.body for m in mails]
    out = []
    for i, mail in enumerate(mails):
        body, j = mail.body, i
        while len(body) < size:
            j += 1
            body += "\n\n" + bodies[j % len(bodies)]
        out.append(replace(mail, body=body[:size]))
    return out


def per_mail(run: Any, mails: list[RoutingInput], routing: Any, repeat: int) -> float:
    for mail in mails[:20]:
        run(mail, routing)  # warm-up
    times = []
    for _ in range(repeat):
        start = time.process_time()
        for mail in mails:
            run(mail, routing)
        times.append((time.process_time() - start) / len(mails))
    return statistics.median(times) * 1000


def compare(config: Any, new: CompiledRouting, mails: list[RoutingInput], repeat: int) -> None:
    assert config.routing is not None
    parts = (config.routing, new.own_service, new.general_service)
    print("routing decision per mail, before (regex per rule) / after (one-pass matcher):")
    for model_name, model in (("rules + model", new.model), ("rules alone", None)):
        old_routing = routing_reference.compile_routing(*parts, model)
        new_routing = compile_routing(*parts, model)
        for label, size in (("short (300 chars)", 300), ("3 KB", 3000)):
            batch = sized(mails, size)
            before = per_mail(routing_reference.decide, batch, old_routing, repeat)
            after = per_mail(decide, batch, new_routing, repeat)
            print(
                f"  {model_name:13} {label:17} before {before:6.3f} ms  after {after:6.3f} ms"
                f"  ({before / after:4.1f}× faster)"
            )


class ReferenceModel:
    """The same model's numbers through the features and heads as they were."""

    def __init__(self, model: Classifier) -> None:
        self.model = model

    def __getattr__(self, name: str) -> Any:
        """Everything but ``classify`` (the heads' metadata, ...) is the model's own."""
        return getattr(self.model, name)

    def classify(self, subject: str, text: RoutingText) -> dict[str, Prediction]:
        return classifier_reference.classify(self.model, subject, text)


def classify(mail: RoutingInput, model: Any) -> None:
    model.classify(mail.subject, RoutingText(mail.body, mail.quoted))


def compare_model(
    config: Any, new: CompiledRouting, mails: list[RoutingInput], repeat: int
) -> None:
    assert config.routing is not None and new.model is not None
    parts = (config.routing, new.own_service, new.general_service)
    old_model = ReferenceModel(new.model)
    old_routing = compile_routing(*parts, old_model)  # type: ignore[arg-type]
    print("model per mail, before (hashed n-grams, Counter, searchsorted) / after (vectorised):")
    for label, size in (("short (300 chars)", 300), ("3 KB", 3000)):
        batch = sized(mails, size)
        for what, run, before_arg, after_arg in (
            ("model alone", classify, old_model, new.model),
            ("whole decision", decide, old_routing, new),
        ):
            before = per_mail(run, batch, before_arg, repeat)
            after = per_mail(run, batch, after_arg, repeat)
            print(
                f"  {what:14} {label:17} before {before:6.3f} ms  after {after:6.3f} ms"
                f"  ({before / after:4.1f}× faster)"
            )


if __name__ == "__main__":
    main()
