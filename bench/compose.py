"""Building the outgoing mails (issue 14, point 3): the builder before (the standard
library's MIME classes and generator, frozen in tests/compose_reference.py) and the bytes
written directly (mailbot.mail.compose and its parts), side by side in one run; and rendering them
(point 6): ``Renderer.render`` (Jinja and css_inline for every mail) against
``Renderer.render_once`` (a skeleton per template and settings, filled per mail).

    python bench/compose.py [--repeat 5] [--mails 300]

For an AR (ar-general in French, ar-etrangers with an Arabic translation), a transfer
notice and a forward of a 3 KB mail: CPU milliseconds per mail (time.process_time), the
best of ``--repeat`` runs of ``--mails`` mails each, and the ratio. For the builders the
rendering is done once, outside the clock; the outputs are checked byte for byte equal
first (tests/test_compose_bytes.py does so for every template and language). The render
lines give each mail its own reference, time of receipt (23 s apart) and subject, and
check both renders equal for every mail first (tests/test_render_once.py does so for
every template, setting and hostile value).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.policy import default
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

import compose_reference as reference  # noqa: E402
from run import scenario_mail  # noqa: E402

from mailbot.config import load_config  # noqa: E402
from mailbot.mail import compose  # noqa: E402
from mailbot.render.templates import RenderedMail, Renderer  # noqa: E402

try:  # the builder in parts (its Message-IDs and clock read there); one module before
    from mailbot.mail import forward_mail, outgoing_mail

    BUILDER: tuple[ModuleType, ...] = (compose, outgoing_mail, forward_mail)
except ImportError:
    BUILDER = (compose,)

NOW = datetime(2026, 3, 9, 10, 30, tzinfo=UTC)
Variables = dict[str, object]


def cases(renderer: Renderer) -> dict[str, Callable[[ModuleType, int], bytes]]:
    """What each case builds, with either builder module."""
    config = load_config(ROOT / "rules.yaml")

    def rendered(name: str, language: str, **extra: object) -> RenderedMail:
        variables = {**renderer.meta(name).examples(include_optional=True), **extra}
        return renderer.render(name, variables, language=language)

    ar_fr = rendered("ar-general", "fr")
    ar_ar = rendered("ar-etrangers", "ar")
    notice = rendered("ar-general", "fr", transferred=True)
    original = scenario_mail("transfer-3k", 1)

    def to_citizen(mail: RenderedMail) -> Callable[[ModuleType, int], bytes]:
        def build(module: ModuleType, n: int) -> bytes:
            composer = module.Composer.from_config(config)
            built = composer.to_citizen(
                mail,
                mailbox_address="pref-contact@seine-maritime.gouv.fr",
                to=f"usager{n}@example.fr",
                in_reply_to=f"<bench-{n}@example.fr>",
                references=(),
            )
            return bytes(built.as_bytes())

        return build

    def forward(module: ModuleType, n: int) -> bytes:
        composer = module.Composer.from_config(config)
        _mid, raw = composer.forward(
            original,
            mailbox_address="pref-contact@seine-maritime.gouv.fr",
            reference=f"SM-2026-{n:06d}",
            subject="Demande de carte grise suite à un achat",
            note="Bonjour,\nVoici le message d'un usager, transmis par mailbot.\n" * 6,
            to="pref-cartes-grises@seine-maritime.gouv.fr",
            citizen=f"usager{n}@example.fr",
        )
        return bytes(raw)

    return {
        "AR ar-general (fr)": to_citizen(ar_fr),
        "AR ar-etrangers (ar)": to_citizen(ar_ar),
        "AR + transfer notice": to_citizen(notice),
        "forward (3 KB original)": forward,
    }


def same_mail(build: Callable[[ModuleType, int], bytes]) -> bool:
    """Both builders give the same mail once Message-ID, boundary and date are fixed: the
    same bytes, or (the reference writes texts in base64, mailbot 8-bit with the HTML's
    line ends joined) the same header section and the same texts as a reader gets them."""
    patched = (*BUILDER, reference)
    saved = [(m, m.new_message_id, m.datetime) for m in patched]  # type: ignore[attr-defined]

    class Frozen(datetime):
        @classmethod
        def now(cls, tz: object = None) -> Frozen:  # type: ignore[override]
            return cls.fromtimestamp(NOW.timestamp(), UTC)

    outputs = []
    fresh_uuid = uuid.uuid4
    uuid.uuid4 = lambda: uuid.UUID(int=7)  # a forward's boundary
    try:
        for module in patched:
            module.new_message_id = lambda domain: f"<fixed@{domain}>"  # type: ignore[attr-defined]
            module.datetime = Frozen  # type: ignore[attr-defined]
        for module in (compose, reference):
            random.seed(3)
            outputs.append(build(module, 1))
    finally:
        uuid.uuid4 = fresh_uuid
        for module, message_id, clock in saved:
            module.new_message_id = message_id  # type: ignore[attr-defined]
            module.datetime = clock  # type: ignore[attr-defined]
    return outputs[0] == outputs[1] or read_as(outputs[0]) == read_as(outputs[1])


def read_as(raw: bytes) -> tuple[bytes, list[tuple[str, str]]]:
    """A mail's header section, and each leaf's type and content (line ends as spaces)."""
    head = raw[: raw.index(b"\r\n\r\n")]
    mail = message_from_bytes(raw.replace(b"\r\n", b"\n"), policy=default)
    leaves = [
        (part.get_content_type(), str(part.get_content()).rstrip("\n").replace("\n", " "))
        for part in mail.walk()
        if not part.is_multipart()
    ]
    return head, leaves


def cpu_ms(build: Callable[[ModuleType, int], bytes], module: ModuleType, mails: int) -> float:
    start = time.process_time()
    for n in range(mails):
        build(module, n)
    return (time.process_time() - start) / mails * 1000


def render_cases(renderer: Renderer, count: int) -> dict[str, tuple[str, str, list[Variables]]]:
    """Template, language and the variables of ``count`` distinct mails, per case."""
    subjects = ["Demande de carte grise", "Renouvellement titre de séjour", "Permis B"]

    def mails(name: str, **extra: object) -> list[Variables]:
        base = {**renderer.meta(name).examples(include_optional=False), **extra}
        received = base["received_at"]
        assert isinstance(received, datetime)
        return [
            {
                **base,
                "reference": f"SM-2026-{n:06d}",
                "received_at": received + timedelta(seconds=23 * n),
                "original_subject": f"{subjects[n % 3]} n° {n}" if n % 10 else "",
            }
            for n in range(count)
        ]

    return {
        "AR ar-general (fr)": ("ar-general", "fr", mails("ar-general")),
        "AR ar-etrangers (ar)": ("ar-etrangers", "ar", mails("ar-etrangers")),
        "AR + transfer notice": ("ar-general", "fr", mails("ar-general", transferred=True)),
        "re-orientation (fr)": ("reorientation", "fr", mails("reorientation")),
    }


def render_ms(renderer: Renderer, method: str, case: tuple[str, str, list[Variables]]) -> float:
    name, language, mails = case
    render = getattr(renderer, method)
    start = time.process_time()
    for variables in mails:
        render(name, variables, language=language)
    return (time.process_time() - start) / len(mails) * 1000


def bench_render(repeat: int, count: int) -> None:
    """render() against render_once() per mail, each mail with values of its own; a fresh
    renderer, whose skeletons are built and checked on a first pass outside the clock."""
    renderer = Renderer(ROOT / "templates")
    print(f"Render CPU ms per mail, best of {repeat} x {count} (render -> render_once)")
    for label, case in render_cases(renderer, count).items():
        name, language, mails = case
        for variables in mails:
            once = renderer.render_once(name, variables, language=language)
            assert once == renderer.render(name, variables, language=language), label
        before = min(render_ms(renderer, "render", case) for _ in range(repeat))
        now = min(render_ms(renderer, "render_once", case) for _ in range(repeat))
        print(f"  {label:<26} {before:6.3f} -> {now:6.3f} ms  ({before / now:4.1f}x)")
    print(f"  ({dict(renderer._skeletons.counts)})")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--mails", type=int, default=300)
    args = parser.parse_args()
    renderer = Renderer(ROOT / "templates")
    print(f"CPU ms per mail, best of {args.repeat} x {args.mails} (before -> now)")
    for name, build in cases(renderer).items():
        assert same_mail(build), f"{name}: the two builders differ"
        before = min(cpu_ms(build, reference, args.mails) for _ in range(args.repeat))
        now = min(cpu_ms(build, compose, args.mails) for _ in range(args.repeat))
        print(f"  {name:<26} {before:6.3f} -> {now:6.3f} ms  ({before / now:4.1f}x)")
    bench_render(args.repeat, args.mails)


if __name__ == "__main__":
    main()
