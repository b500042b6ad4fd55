"""Check the writers' .eml files against plan.csv and the rules of WRITING.md.

``python tests/data/corpus/check_mails.py [--plan plan.csv] [--mails DIR ...]``: one line per
problem (exit status 1), or a one-line summary. It checks the form of each mail only (name,
headers, addresses, MIME structure required by the row's format); whether the text fits the
row's labels is for a human reader with docs/routing-guide.md, never for mailbot's own rules.
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
from collections import Counter
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import getaddresses, parsedate_to_datetime
from pathlib import Path

HERE = Path(__file__).parent
NAME = re.compile(r"^(\d{3,4})-[a-z0-9]+(?:-[a-z0-9]+)*\.eml$")
ADDRESS = re.compile(r"[\w.+'-]+@([\w-]+(?:\.[\w-]+)+)")
ALLOWED_DOMAIN = re.compile(r"(?:^|\.)(?:example\.(?:fr|com|net)|seine-maritime\.gouv\.fr)$", re.I)
MAILBOX_ADDRESSES = {
    "general": {"pref-contact@seine-maritime.gouv.fr", "prefecture@seine-maritime.gouv.fr"},
    "etrangers": {"pref-etrangers@seine-maritime.gouv.fr"},
}
RELAY = "no-reply@seine-maritime.gouv.fr"
FORM_FIELDS = ["Objet :", "Nom :", "Courriel :", "Téléphone :", "Commune :", "Message :"]
AUTOMATIC = re.compile(r"^(?:list-|precedence$|x-auto|x-autoreply|x-autorespond)", re.I)
LATIN = {"iso-8859-1", "iso-8859-15", "windows-1252"}


def text_of(message: EmailMessage) -> str:
    """The citizen-visible text: every text part, HTML tags removed."""
    parts = []
    for part in message.walk():
        if part.get_content_maintype() == "text" and not part.is_attachment():
            content = str(part.get_content())
            if part.get_content_subtype() == "html":
                content = re.sub(r"<[^>]+>", " ", content)
            parts.append(content)
    return "\n".join(parts)


def format_problems(fmt: str, message: EmailMessage, raw_subject: str, text: str) -> list[str]:
    """What the row's format requires of the MIME structure and the text."""
    types = [part.get_content_type() for part in message.walk()]
    letters = [c for c in text if c.isalpha()]
    words = len(text.split())
    checks = {
        "plain": types == ["text/plain"],
        "html-only": types == ["text/html"],
        "multipart-alternative": "multipart/alternative" in types
        and {"text/plain", "text/html"} <= set(types),
        "attachment": any(part.is_attachment() for part in message.walk()),
        "latin1": any((p.get_content_charset() or "") in LATIN for p in message.walk()),
        "rfc2047-subject": "=?" in raw_subject,
        "reply-quoted": bool(message["In-Reply-To"] or message["References"]),
        "forwarded": bool(re.search(r"^(?:fwd?|tr)\s*:", str(message["Subject"] or ""), re.I))
        or "message/rfc822" in types,
        "all-caps": bool(letters) and sum(c.isupper() for c in letters) / len(letters) >= 0.7,
        "very-short": words <= 40,
        "long-rambling": words >= 300,
        "contact-form": True,
    }
    return [] if checks.get(fmt, False) else [f"does not look like format {fmt!r}"]


def form_problems(message: EmailMessage, text: str) -> list[str]:
    """The website relay always writes the same headers and fields (WRITING.md)."""
    found = []
    if message["Return-Path"] != f"<{RELAY}>" or RELAY not in str(message["From"]):
        found.append(f"a contact-form mail comes from <{RELAY}>")
    if str(message["X-Mailer"]) != "Formulaire de contact v3":
        found.append("a contact-form mail has X-Mailer: Formulaire de contact v3")
    if not str(message["Subject"]).startswith("[Formulaire de contact] "):
        found.append("a contact-form subject starts with '[Formulaire de contact] '")
    positions = [text.find(field) for field in FORM_FIELDS]
    if -1 in positions or positions != sorted(positions):
        found.append("the form fields are " + ", ".join(FORM_FIELDS) + " in that order")
    reply_to = [a for _, a in getaddresses([str(message["Reply-To"] or "")]) if a]
    if not reply_to or f"Courriel : {reply_to[0]}" not in text:
        found.append("Reply-To is the address given in the Courriel field")
    return found


def mail_problems(row: dict[str, str], data: bytes) -> list[str]:
    message = BytesParser(policy=policy.default).parsebytes(data)
    assert isinstance(message, EmailMessage)
    raw = {k.lower(): v for k, v in message.raw_items()}
    required = ["Return-Path", "From", "To", "Subject", "Date", "Message-ID", "MIME-Version"]
    found = [f"missing header {h}" for h in required if h.lower() not in raw]
    try:
        date = parsedate_to_datetime(str(raw.get("date", "")))
        day = str(raw.get("date", "")).split(",")[0].strip()
        if date.year != 2026 or (day.isalpha() and day != date.strftime("%a")):
            found.append("Date must be in 2026 with the right weekday")
    except (TypeError, ValueError):
        found.append("Date does not parse")
    addressed = {a.lower() for _, a in getaddresses([str(message["To"]), str(message["Cc"])])}
    if not addressed & MAILBOX_ADDRESSES[row["mailbox"]]:
        found.append(f"To/Cc must name the {row['mailbox']} mailbox")
    text = text_of(message)
    headers = " ".join(str(v) for v in raw.values())
    for domain in {d.lower() for d in ADDRESS.findall(headers + "\n" + text)}:
        if not ALLOWED_DOMAIN.search(domain):
            found.append(f"address on a real domain: {domain}")
    found += [f"automatic-mail header {k}" for k in raw if AUTOMATIC.match(k)]
    if "auto-submitted" in raw and str(raw["auto-submitted"]).lower() != "no":
        found.append("Auto-Submitted other than 'no'")
    if re.search(r"SM-\d{4}-\d{6}", str(message["Subject"] or "")):
        found.append("no tracking reference in the subject")
    if row["format"] == "contact-form":
        found += form_problems(message, text)
    elif RELAY in str(raw.get("return-path", "")):
        found.append("only contact-form mails come from the relay")
    found += format_problems(row["format"], message, str(raw.get("subject", "")), text)
    return found


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan", type=Path, default=HERE / "plan.csv")
    parser.add_argument("--mails", type=Path, nargs="+", default=[HERE / "dev", HERE / "test"])
    args = parser.parse_args(argv)
    with args.plan.open(encoding="utf-8", newline="") as handle:
        plan = {row["id"]: row for row in csv.DictReader(handle)}
    problems: list[str] = []
    seen: Counter[str] = Counter()
    message_ids: Counter[str] = Counter()
    files = sorted(f for folder in args.mails if folder.is_dir() for f in folder.glob("*.eml"))
    for path in files:
        match = NAME.match(path.name)
        if not match or match.group(1) not in plan:
            problems.append(f"{path.name}: name must be NNN-short-slug.eml with NNN in the plan")
            continue
        seen[match.group(1)] += 1
        data = path.read_bytes()
        problems += [f"{path.name}: {p}" for p in mail_problems(plan[match.group(1)], data)]
        header = BytesParser(policy=policy.default).parsebytes(data, headersonly=True)
        message_ids[str(header["Message-ID"])] += 1
    problems += [f"id {i}: {n} files" for i, n in seen.items() if n > 1]
    problems += [f"Message-ID used {n} times: {m}" for m, n in message_ids.items() if n > 1]
    if problems:
        print("\n".join(problems))
        return 1
    print(f"{len(files)} mails checked, {len(plan) - len(seen)} plan rows still without a mail")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
