"""Check plan.csv against the labelling rules of docs/routing-guide.md and print its distribution.

Run from anywhere: ``python tests/data/corpus/check_plan.py [plan.csv]``. Exit status 1 and one
line per problem when a row breaks a rule; otherwise the Markdown tables pasted in PLAN.md.
The allowed service/category pairs are those of the guide's table (section 3), so a label that
the guide forbids is caught before any writer turns the row into a mail.
"""

from __future__ import annotations

import csv
import sys
from collections import Counter
from pathlib import Path

COLUMNS = ["id", "mailbox", "service", "category", "reorient", "language", "format", "hard"]
COLUMNS += ["scenario"]
MAILBOXES = {"general", "etrangers"}
TITLE = {"information", "etat-avancement", "rendez-vous", "reclamation", "autre"}
ALLOWED = {
    "etrangers": TITLE,
    "cartes-grises": TITLE,
    "permis": TITLE,
    "cni-passeport": TITLE,
    "general": TITLE | {"suggestion", "plainte-riverain"},
    "cabinet": {
        "intervention-prefet",
        "plainte-riverain",
        "information",
        "etat-avancement",
        "autre",
    },
    "qualite-accueil": {"reclamation", "suggestion", "autre", "etat-avancement"},
    "autres-administrations": {
        "information",
        "etat-avancement",
        "rendez-vous",
        "plainte-riverain",
        "autre",
    },
}
CATEGORIES = set().union(*ALLOWED.values())
TARGETS = {"mairie", "caf", "france-travail", "impots", "cpam", "justice", "urssaf-retraite"}
LANGUAGES = {"fr", "en", "ar", "es", "uk", "pt", "ro", "ru", "tr"}
FORMATS = {
    "plain",
    "html-only",
    "multipart-alternative",
    "forwarded",
    "contact-form",
    "attachment",
    "all-caps",
    "very-short",
    "long-rambling",
    "rfc2047-subject",
    "latin1",
    "reply-quoted",
}
FORM_OBJETS = [
    "Étrangers - titre de séjour",
    "Cartes grises",
    "Permis de conduire",
    "Carte d'identité / passeport",
    "Réclamation - accueil",
    "Suggestion",
    "Autre demande",
]


def row_problems(row: dict[str, str]) -> list[str]:
    """Every rule of the guide or of PLAN.md that this row breaks."""
    found = []
    service, category, reorient = row["service"], row["category"], row["reorient"]
    if row["mailbox"] not in MAILBOXES:
        found.append(f"unknown mailbox {row['mailbox']!r}")
    if service not in ALLOWED:
        found.append(f"unknown service {service!r}")
    elif category not in ALLOWED[service]:
        found.append(f"category {category!r} not allowed for service {service!r}")
    if (service == "autres-administrations") != (reorient in TARGETS):
        found.append(f"reorient {reorient!r} does not match service {service!r}")
    if row["language"] not in LANGUAGES:
        found.append(f"unknown language {row['language']!r}")
    if row["format"] not in FORMATS:
        found.append(f"unknown format {row['format']!r}")
    if row["hard"] not in {"yes", "no"}:
        found.append(f"hard must be yes or no, not {row['hard']!r}")
    if (row["hard"] == "yes") != ("HARD:" in row["scenario"]):
        found.append("a hard row says why after 'HARD:', and only a hard row does")
    if row["format"] == "contact-form":
        if row["mailbox"] != "general":
            found.append("the website form delivers to the general mailbox")
        if not any(f"Form Objet «{objet}»" in row["scenario"] for objet in FORM_OBJETS):
            found.append("a contact-form row names one of the form's Objet choices")
    return found


def table(title: str, counts: Counter[str], total: int) -> str:
    lines = [f"| {title} | rows | % |", "|---|---:|---:|"]
    for key, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"| {key or '(none)'} | {n} | {100 * n / total:.1f} |")
    return "\n".join(lines)


def cross(rows: list[dict[str, str]]) -> str:
    """Service x category counts: the cells a routing evaluation will be read by."""
    categories = sorted(CATEGORIES)
    lines = ["| service | " + " | ".join(categories) + " | total | hard |"]
    lines.append("|---|" + "---:|" * (len(categories) + 2))
    for service in ALLOWED:
        mine = [r for r in rows if r["service"] == service]
        cells = [str(sum(r["category"] == c for r in mine) or "") for c in categories]
        hard = sum(r["hard"] == "yes" for r in mine)
        lines.append(f"| {service} | " + " | ".join(cells) + f" | {len(mine)} | {hard} |")
    totals = [str(sum(r["category"] == c for r in rows)) for c in categories]
    hard = sum(r["hard"] == "yes" for r in rows)
    lines.append("| **total** | " + " | ".join(totals) + f" | {len(rows)} | {hard} |")
    return "\n".join(lines)


def main(path: Path) -> int:
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames != COLUMNS:
            print(f"{path}: columns must be {','.join(COLUMNS)}")
            return 1
        rows = list(reader)
    # ids run in order from the first row's (001 for the test corpus, 1801… for a writer's set)
    first = int(rows[0]["id"]) if rows and rows[0]["id"].isdigit() else 1
    problems = [
        f"{path}: row {n} has id {row['id']!r}: ids run {first:03d}, {first + 1:03d}, ... in order"
        for n, row in enumerate(rows)
        if row["id"] != f"{first + n:03d}"
    ]
    for row in rows:
        problems += [f"{path}: id {row['id']}: {p}" for p in row_problems(row)]
    for scenario, n in Counter(r["scenario"] for r in rows).items():
        if n > 1:
            problems.append(f"{path}: scenario used {n} times: {scenario[:60]}")
    if problems:
        print("\n".join(problems))
        return 1
    total = len(rows)
    print(cross(rows), end="\n\n")
    for column in ["mailbox", "reorient", "language", "format", "hard"]:
        print(table(column, Counter(r[column] for r in rows), total), end="\n\n")
    return 0


if __name__ == "__main__":
    default = Path(__file__).with_name("plan.csv")
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else default))
