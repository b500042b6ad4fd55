"""A private PostgreSQL cluster for tests: initdb under a temp dir, loopback port."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa


def _bin(name: str) -> str:
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))), None
    )
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} is missing: run scripts/setup-tests")
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# Under libfaketime (the suite run at another date), its preload and shared memory: the
# first preloaded process creates the memory, which another user may not open. So the
# postgres user's first process preloads it, not runuser (root).
SHARED_CLOCK = ("LD_PRELOAD", "FAKETIME_SHARED")


def _faked_clock_preload() -> list[str]:
    """``env LD_PRELOAD=…`` when the tests run under libfaketime, else nothing."""
    preload = os.environ.get("LD_PRELOAD")
    return ["env", f"LD_PRELOAD={preload}"] if preload and "FAKETIME" in os.environ else []


class PostgresServer:
    def __init__(self) -> None:
        # Its own top-level temp dir: pytest's are 0700 root, which the postgres user cannot enter.
        self.root = Path(tempfile.mkdtemp(prefix="mailbot-pg-"))
        self.root.chmod(0o755)
        self.data = self.root / "data"
        self.port = _free_port()
        self.user = pwd.getpwnam("postgres") if os.geteuid() == 0 else None

    def _run(self, *args: str) -> None:
        command = list(args)
        env = None
        if self.user is not None:
            preload = _faked_clock_preload()
            command = ["runuser", "-u", "postgres", "--", *preload, *command]
            if preload:
                env = {k: v for k, v in os.environ.items() if k not in SHARED_CLOCK}
        subprocess.run(command, check=True, capture_output=True, env=env)

    def start(self) -> str:
        if self.user is not None:
            os.chown(self.root, self.user.pw_uid, self.user.pw_gid)
        # --no-sync: a throw-away cluster (run with fsync=off) need not wait for the disk;
        # initdb's final sync of 40 MB was most of its ~5 s under load.
        self._run(
            _bin("initdb"),
            *("-D", str(self.data), "-A", "trust", "-U", "mailbot", "-E", "UTF8", "--no-sync"),
        )
        self._run(
            _bin("pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.root / "log"),
            "-o",
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off",
            "-w",
            "start",
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        return f"postgresql+psycopg://mailbot@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        self._run(_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


def fresh_database(server_url: str, prefix: str, test_id: str) -> str:
    """A new, empty database on a running test cluster for one test (named from its id, so
    parametrised runs and xdist workers never share one); its URL."""
    name = f"{prefix}{abs(hash(test_id)) % 10**9}"
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    admin.dispose()
    return server_url.rsplit("/", 1)[0] + f"/{name}"


def read_only(url: str, on: bool = True) -> None:
    """The test database refuses writes (``default_transaction_read_only``, as during a
    failover or a maintenance: SQLSTATE 25006 at the first write), or takes them again.
    Set from the cluster's own database (a read-only session may not undo it), then every
    session of the test database ended: the setting is read when a session starts, and
    the application's pool (pre-ping) opens new ones."""
    server, name = url.rsplit("/", 1)
    admin = sa.create_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
    setting = (
        "SET default_transaction_read_only = on" if on else "RESET default_transaction_read_only"
    )
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f"ALTER DATABASE {name} {setting}"))
            conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :name"
                ),
                {"name": name},
            )
    finally:
        admin.dispose()
