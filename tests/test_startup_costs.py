"""What a start no longer pays for (issue 14, point 9): behaviours, never timings."""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from mailbot.cli import parser
from mailbot.core import classifier

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
