"""Routing speed: model load time, and classification time per mail once loaded.

    python bench/routing.py [--repeat 5]

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
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
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
