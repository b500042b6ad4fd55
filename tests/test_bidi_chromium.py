"""The Arabic AR as Chromium displays it: the order a reader sees, measured on screen.

The demo's Arabic mail is opened in headless Chromium with a small script that measures,
with DOM Ranges, where each word of a value is drawn (getBoundingClientRect). Inside the
right-to-left paragraph, a French address, a phone number and the reference must still read
left to right ("7 place de la Madeleine…", not "place de la Madeleine… 7"); the Arabic date
must read right to left (day, month, year from right to left); e-mail and web addresses must
be links.
"""

from __future__ import annotations

import email
import email.policy
import itertools
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from babel.dates import get_month_names

ROOT = Path(__file__).resolve().parent.parent
FRENCH_MONTHS = {name: number for number, name in get_month_names("wide", locale="fr").items()}
ARABIC_MONTHS = get_month_names("wide", locale="ar")

# Measures, inside the Arabic part, the box of each listed word of a phrase.
MEASURE = """
<script>
(function () {
  var root = document.querySelector('[lang="ar"][dir="rtl"]');
  var out = {found: !!root, phrases: {}, links: []};
  function box(node, start, word) {
    var range = document.createRange();
    range.setStart(node, start);
    range.setEnd(node, start + word.length);
    var r = range.getBoundingClientRect();
    return {left: r.left, right: r.right, top: r.top, bottom: r.bottom};
  }
  function measure(key, phrase, words) {
    var walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
    var node;
    while ((node = walker.nextNode())) {
      var at = node.data.indexOf(phrase);
      if (at < 0) continue;
      var boxes = [], from = at;
      for (var i = 0; i < words.length; i++) {
        var index = node.data.indexOf(words[i], from);
        boxes.push(box(node, index, words[i]));
        from = index + words[i].length;
      }
      out.phrases[key] = boxes;
      return;
    }
    out.phrases[key] = null;
  }
  if (root) {
    var wanted = JSON.parse(document.getElementById('wanted').textContent);
    for (var key in wanted) measure(key, wanted[key][0], wanted[key][1]);
    root.querySelectorAll('a[href]').forEach(function (a) { out.links.push(a.getAttribute('href')); });
  }
  var pre = document.createElement('pre');
  pre.id = 'measured';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
</script>
"""


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    pytest.fail("chromium is not installed: run scripts/setup-tests")


def dump_dom(page: Path, width: int) -> str:
    with tempfile.TemporaryDirectory() as profile:
        result = subprocess.run(
            [
                chromium(),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                f"--user-data-dir={profile}",
                f"--window-size={width},2000",
                "--dump-dom",
                page.as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=90,
        )
    return result.stdout.decode("utf-8")


@pytest.fixture(scope="module")
def arabic_ar(tmp_path_factory: pytest.TempPathFactory) -> EmailMessage:
    out = tmp_path_factory.mktemp("demo")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "mailbot.cli",
            "--config",
            str(ROOT / "rules.yaml"),
            "demo",
            "--out",
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    for path in sorted((out / "outgoing").glob("*.eml")):
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        html = msg.get_body(("html",))
        if html is not None and 'lang="ar"' in html.get_content():
            return msg
    pytest.fail("the demo sent no Arabic AR")


def content(msg: EmailMessage, kind: str) -> str:
    part = msg.get_body((kind,))
    assert part is not None
    text = part.get_content()
    assert isinstance(text, str)
    return text


def measured(msg: EmailMessage, tmp_path: Path, width: int) -> dict[str, Any]:
    text = content(msg, "plain")
    day, month, year = re.search(
        r"reçu(?: votre message)? le \w+ (\d+)(?:er)? (\w+) (\d{4})", text
    ).groups()  # type: ignore[union-attr]
    arabic_month = ARABIC_MONTHS[FRENCH_MONTHS[month]]
    reference = re.search(r"SM-\d{4}-\d{6}", text).group(0)  # type: ignore[union-attr]
    wanted = {
        "address": [
            "7 place de la Madeleine",
            ["7", "place", "Madeleine", "76036", "Rouen", "Cedex"],
        ],
        "phone": ["02 32 76 50 00", ["02", "32", "76", "50", "00"]],
        "reference": [reference, ["SM", "000"]],
        "service": ["Direction des migrations", ["Direction", "migrations"]],
        "date": [f"{int(day)} {arabic_month} {year}", [str(int(day)), arabic_month, year]],
    }
    page = tmp_path / f"ar-{width}.html"
    html = content(msg, "html")
    script = f'<script type="application/json" id="wanted">{json.dumps(wanted)}</script>{MEASURE}'
    page.write_text(html.replace("</body>", script + "</body>"), encoding="utf-8")
    dom = dump_dom(page, width)
    found = re.search(r'<pre id="measured">(.*?)</pre>', dom, re.S)
    assert found, "the measuring script did not run"
    result: dict[str, Any] = json.loads(
        found.group(1)
        .replace("&amp;", "&")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", '"')
    )
    return result


def left_to_right(boxes: list[dict[str, float]]) -> Iterator[bool]:
    for first, second in itertools.pairwise(boxes):
        same_line = abs(first["top"] - second["top"]) < 4
        yield first["right"] <= second["left"] + 1 if same_line else second["top"] > first["top"]


@pytest.mark.parametrize("width", [375, 1024])
def test_arabic_ar_displays_values_in_reading_order(
    arabic_ar: EmailMessage, tmp_path: Path, width: int
) -> None:
    result = measured(arabic_ar, tmp_path, width)
    assert result["found"], "no right-to-left Arabic part"
    phrases = result["phrases"]
    for key in ("address", "phone", "reference", "service"):
        boxes = phrases[key]
        assert boxes, f"{key} not found in the Arabic part"
        assert all(left_to_right(boxes)), f"{key} is reordered on screen: {boxes}"
    # The Arabic date reads right to left: day at the right, then month, then year.
    date = phrases["date"]
    assert date, "the date of receipt is not written in Arabic"
    day, month, year = date
    assert abs(day["top"] - year["top"]) < 4, "the date is cut across lines"
    assert day["left"] >= month["right"] - 1 and month["left"] >= year["right"] - 1, date
    links = result["links"]
    assert any(href.startswith("mailto:") for href in links), links
    assert "https://administration-etrangers-en-france.interieur.gouv.fr" in links
    assert any(href.startswith("tel:") for href in links), links
