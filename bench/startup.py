"""Start-up: ``mailbot --help`` and the time to a first mail's AR (issue 14, point 9).

    python bench/startup.py [--repeat 7] [--trees DIR,DIR]

For each source tree (default: this one; give an older checkout too, e.g. a ``git archive
main`` export, to compare in one run), ``--repeat`` times, the trees taking turns so that a
change in the machine's load hits them alike; wall time (median, minimum) and the child's
CPU time (median, user + system):

* ``mailbot --help``, as the console script runs it (``from mailbot.cli import main``) in a
  fresh interpreter — target ≤ 0.15 s; a bare ``python -c pass`` is printed beside it;
* time to first mail: one mail waiting in a real Dovecot INBOX, ``mailbot poll --once`` with
  the shipped rules (routing on, as in production) in a fresh interpreter, until it exits
  with the AR delivered to the aiosmtpd sink — target ≤ 0.6 s. Twice: on a new database
  (the very first start: it creates the schema) and on a database already at the schema's
  head (every later start; created beforehand by ``mailbot migrate``, untimed).

``--phases``: where the time to first mail goes, per tree — the same start, in one fresh
interpreter per run, timed in-process by a copy of ``cmd_poll`` (CPU ms of each phase,
median over the repeats; database at head, bytecode compiled, render cache warm). A tree
that starts the routing helper first (``start_routing_helper``) starts it there too; its
process's CPU is the last row.

Every tree shares one render cache directory of this run (``MAILBOT_CACHE_DIR``), warmed by
an untimed ``mailbot templates check`` first, as a deployment runs it before starting the service.
Each tree's modules are compiled to bytecode first (``compileall``), as ``pip install`` does
for a deployment: without it (``PYTHONDONTWRITEBYTECODE`` set, a source checkout) every run
compiles mailbot's modules again, ~0.2–0.3 s that no installed mailbot pays. ``--no-compile``
measures that case. Each tree runs as its own ``mailbot`` console script would (the entry
point of its ``pyproject.toml``).

``--deployed``: each tree is first installed with pip (not editable) into a virtualenv of its
own, as ``deploy/`` installs mailbot in /opt/mailbot/venv, and every command runs that venv's
interpreter from a neutral working directory. The source-tree runs import mailbot through
this machine's interpreter, whose site-packages hold ``.pth`` files that a deployment does not
have (here an editable-install finder and a CA bundle hook, ~30 ms of every start).
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from run import realistic_mail, write_config  # noqa: E402
from servers import DovecotServer, SmtpServer  # noqa: E402


def console_script(tree: Path) -> str:
    """What pip's generated ``mailbot`` script runs, from the tree's own entry point."""
    with (tree / "pyproject.toml").open("rb") as file:
        entry = tomllib.load(file)["project"]["scripts"]["mailbot"]
    module, _, function = entry.partition(":")
    return f"import sys; from {module} import {function}; sys.exit({function}())"


@dataclass
class Times:
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def __str__(self) -> str:
        return (
            f"wall median {statistics.median(self.wall) * 1000:.0f} ms "
            f"(min {min(self.wall) * 1000:.0f}), "
            f"CPU median {statistics.median(self.cpu) * 1000:.0f} ms"
        )


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(run: Callable[[], object], into: Times) -> None:
    cpu, start = children_cpu(), time.perf_counter()
    run()
    into.wall.append(time.perf_counter() - start)
    into.cpu.append(children_cpu() - cpu)


# A tree installed in a venv of its own (``--deployed``): that venv's interpreter.
DEPLOYED: dict[Path, Path] = {}


def interpreter(tree: Path) -> tuple[str, dict[str, str], Path]:
    """How a tree's commands run: its venv's Python from a neutral folder once deployed,
    else this Python on the source tree (``python -c`` puts the working directory first on
    sys.path: the tree's own ``mailbot`` package)."""
    if tree in DEPLOYED:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        return str(DEPLOYED[tree]), env, DEPLOYED[tree].parent.parent
    return sys.executable, dict(os.environ, PYTHONPATH=str(tree)), tree


def deploy(tree: Path, into: Path) -> None:
    """``pip install`` the tree (not editable) into a new venv, bytecode compiled as pip
    does, as ``deploy/`` installs it."""
    venv = into / f"venv-{len(DEPLOYED)}"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    install = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(tree)],
        capture_output=True,
        text=True,
    )
    if install.returncode:
        sys.exit(f"pip install {tree} failed:\n{install.stderr}")
    DEPLOYED[tree] = venv / "bin" / "python"


def child(tree: Path, *args: str) -> Callable[[], None]:
    python, env, cwd = interpreter(tree)

    def run() -> None:
        subprocess.run(
            [python, "-c", console_script(tree), *args],
            env=env,
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            check=True,
        )

    return run


def first_mail(
    dovecot: DovecotServer, smtp: SmtpServer, tree: Path, n: int, at_head: bool, into: Times
) -> None:
    """One mail waiting, one `poll --once` timed until it exits with the AR sent."""
    kind = "head" if at_head else "new"
    user = dovecot.new_user(f"first{kind}{tree.name}{n}")
    with user.connect() as client:
        client.append("INBOX", realistic_mail(n))
    with tempfile.TemporaryDirectory() as tmp:
        config = write_config(Path(tmp), {"general": user}, smtp, routing=True, tree=tree)
        if at_head:
            child(tree, "--config", str(config), "migrate")()
        smtp.clear()
        # The mail is there before the first poll: --acknowledge-existing.
        measure(
            child(tree, "--config", str(config), "-q", "poll", "--once", "--acknowledge-existing"),
            into,
        )
        smtp.wait_for(1)


# A copy of `console` + `cmd_poll` (garbage collector off until the worker is built), CPU
# time at each step; the figures as one JSON line on stdout.
PHASES = """
import time
T, rows = [time.process_time(), time.perf_counter()], {}
def mark(name):
    now, wall = time.process_time(), time.perf_counter()
    rows[name] = ((now - T[0]) * 1000, (wall - T[1]) * 1000)
    T[0], T[1] = now, wall
import gc, os, sys
gc.disable()
import mailbot.cli
mark("import mailbot.cli")
import mailbot.config
mark("import config (pydantic, SQLAlchemy, YAML)")
from mailbot.config import load_config
config = load_config(sys.argv[1])
mark("load_config")
helper = None
pool_file = os.path.join(os.path.dirname(mailbot.cli.__file__), "app", "routing_pool.py")
if "def start_routing_helper" in open(pool_file, encoding="utf-8").read():  # forked first
    from mailbot.app.routing_pool import start_routing_helper
    helper = start_routing_helper(config)
mark("routing helper forked")
import mailbot.mail.imap
sources = sent = None
if hasattr(mailbot.mail.imap, "sent_folders"):  # a tree that connects early
    sources = mailbot.mail.imap.inboxes(config)
    sent = mailbot.mail.imap.sent_folders(config)
    for source in [*sources.values(), *(box for _folder, box in sent.values())]:
        source.connect_early()
mark("IMAP connections started (early)")
import mailbot.store
mark("import store (numpy)")
import mailbot.render.templates
mark("import render (Jinja)")
import mailbot.app.context, mailbot.worker
mark("import the rest (intake, routing, mail)")
from mailbot.app.context import App
from mailbot.app.delivery import Outbox
from mailbot.app.intake import Pipeline
from mailbot.mail.smtp import SmtpTransport
from mailbot.render.templates import Renderer
from mailbot.store import Store
store = Store(config.database)
mark("Store()")
renderer = Renderer(config.templates, timezone=config.timezone)
renderer.check_config(config)
mark("Renderer()")
outbox = Outbox(store, SmtpTransport(config.smtp), config.outbox, config.configured_recipients)
if helper is not None:
    pipeline = Pipeline(config, store, renderer, acknowledge_existing=True, routing_pool=helper)
else:
    pipeline = Pipeline(config, store, renderer, acknowledge_existing=True)
mark("Pipeline (routing rules, model)")
app = App(config, store, renderer, pipeline, outbox)
worker = mailbot.worker.make_worker(app, sources, sent) if sent is not None else mailbot.worker.make_worker(app)
gc.freeze()
gc.enable()
mark("make_worker")
worker.poll_once()
mark("poll_once")
outbox.transport.close()
store.close()
pipeline.close()
mark("close")
import resource
usage = resource.getrusage(resource.RUSAGE_SELF)
rows["process (user + system)"] = ((usage.ru_utime + usage.ru_stime) * 1000, 0.0)
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
rows["routing helper (its process)"] = ((usage.ru_utime + usage.ru_stime) * 1000, 0.0)
import json
print(json.dumps(rows))
sys.stdout.flush()
os._exit(0)
"""


Found = dict[str, list[tuple[float, float]]]  # phase -> (CPU ms, wall ms) of each run


def phases(dovecot: DovecotServer, smtp: SmtpServer, tree: Path, n: int, into: Found) -> None:
    """One mail waiting, a database at head, the phases of one `poll --once` start."""
    user = dovecot.new_user(f"phases{tree.name}{n}")
    with user.connect() as client:
        client.append("INBOX", realistic_mail(n))
    with tempfile.TemporaryDirectory() as tmp:
        config = write_config(Path(tmp), {"general": user}, smtp, routing=True, tree=tree)
        child(tree, "--config", str(config), "migrate")()
        smtp.clear()
        python, env, cwd = interpreter(tree)
        console = (tree / "mailbot" / "cli.py").read_text("utf-8")
        for name, value in (("PYDANTIC_DISABLE_PLUGINS", "__all__"), ("OPENBLAS_NUM_THREADS", "1")):
            if name in console:
                env.setdefault(name, value)  # as that tree's console sets it
        run = subprocess.run(
            [python, "-c", PHASES, str(config)],
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        )
        smtp.wait_for(1)
    for name, value in json.loads(run.stdout.splitlines()[-1]).items():
        into.setdefault(name, []).append((value[0], value[1]))


def print_phases(trees: list[Path], found: dict[Path, Found]) -> None:
    """CPU ms (wall ms) of each phase, median over the runs, one column per tree."""
    print(
        "CPU ms (wall ms) per phase of `poll --once` (median), " + " | ".join(t.name for t in trees)
    )
    for name in found[trees[0]]:
        cells = []
        for tree in trees:
            runs = found[tree].get(name, [(0.0, 0.0)])
            cpu = statistics.median(r[0] for r in runs)
            wall = statistics.median(r[1] for r in runs)
            cells.append(f"{cpu:5.0f} ({wall:5.0f})")
        print(f"    {name:45s} " + " | ".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--trees", default=str(ROOT), help="source trees, comma-separated")
    parser.add_argument(
        "--no-compile", action="store_true", help="leave the trees without bytecode"
    )
    parser.add_argument(
        "--phases", action="store_true", help="only the CPU time of each phase of a first mail"
    )
    parser.add_argument(
        "--deployed",
        action="store_true",
        help="install each tree with pip into a venv of its own and run that (as deploy/ does)",
    )
    args = parser.parse_args()
    trees = [Path(t).resolve() for t in args.trees.split(",")]
    cache = tempfile.TemporaryDirectory(prefix="mailbot-bench-cache-")
    venvs = tempfile.TemporaryDirectory(prefix="mailbot-bench-venvs-")
    for tree in trees:
        if args.deployed:
            print(f"installing {tree} into a venv (pip install, not editable)", flush=True)
            deploy(tree, Path(venvs.name))
        if args.no_compile:
            for folder in (tree / "mailbot").rglob("__pycache__"):
                shutil.rmtree(folder)
        else:
            compileall.compile_dir(tree / "mailbot", quiet=1)
    os.environ["MAILBOT_CACHE_DIR"] = cache.name
    if args.phases:
        found: dict[Path, Found] = {tree: {} for tree in trees}
        with DovecotServer() as dovecot, SmtpServer() as smtp:
            for tree in trees:
                child(tree, "--config", str(tree / "rules.yaml"), "templates", "check")()
            for n in range(args.repeat):
                for tree in trees:
                    phases(dovecot, smtp, tree, n, found[tree])
        print_phases(trees, found)
        cache.cleanup()
        venvs.cleanup()
        return
    bare = Times()
    helps = {tree: Times() for tree in trees}
    new_db = {tree: Times() for tree in trees}
    at_head = {tree: Times() for tree in trees}
    python = interpreter(trees[0])[0]
    for _ in range(args.repeat):
        measure(lambda: subprocess.run([python, "-c", "pass"], check=True), bare)
        for tree in trees:
            measure(child(tree, "--help"), helps[tree])
    print(f"{python} -c pass: {bare}")
    for tree in trees:
        print(f"{tree}: mailbot --help: {helps[tree]}")
    with DovecotServer() as dovecot, SmtpServer() as smtp:
        for tree in trees:  # the render cache, as after `mailbot check` at deployment
            child(tree, "--config", str(tree / "rules.yaml"), "templates", "check")()
        for n in range(args.repeat):
            for tree in trees:
                first_mail(dovecot, smtp, tree, n, False, new_db[tree])
                first_mail(dovecot, smtp, tree, n, True, at_head[tree])
    for tree in trees:
        print(f"{tree}: time to first mail (poll --once, 1 mail, routing on)")
        print(f"    new database:       {new_db[tree]}")
        print(f"    database at head:   {at_head[tree]}")
    if len(trees) == 2:
        old, new = trees

        def ratio(times: dict[Path, Times], attr: str) -> str:
            value = statistics.median(getattr(times[new], attr))
            return f"{value / statistics.median(getattr(times[old], attr)):.2f}×"

        for label, times in (("--help", helps), ("first mail, new db", new_db)):
            print(
                f"{new.name} / {old.name}, {label}: wall {ratio(times, 'wall')}, "
                f"CPU {ratio(times, 'cpu')}"
            )
        print(
            f"{new.name} / {old.name}, first mail, db at head: "
            f"wall {ratio(at_head, 'wall')}, CPU {ratio(at_head, 'cpu')}"
        )
    cache.cleanup()
    venvs.cleanup()


if __name__ == "__main__":
    main()
