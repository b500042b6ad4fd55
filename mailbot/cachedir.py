"""Where mailbot keeps what makes it start fast, and whether that place may be trusted.

The directory is ``$MAILBOT_CACHE_DIR``, else systemd's ``$CACHE_DIRECTORY``
(``CacheDirectory=mailbot`` in the unit), else ``$XDG_CACHE_HOME/mailbot`` or
``~/.cache/mailbot``. It is created 0700; one that another user owns or may write to is
refused: what is read from it (compiled templates, parsed YAML) must be what mailbot wrote.
Shared by every layer: the renderer's cache (``render.cache``) and the parsed YAML files
(``yamlcache``) live in sub-directories of it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

CACHE_ENV = "MAILBOT_CACHE_DIR"


def default_directory() -> Path | None:
    """Where the cache lives when nobody said otherwise (None: no home to put it in)."""
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit)
    systemd = os.environ.get("CACHE_DIRECTORY")  # systemd may list several, ':'-separated
    if systemd:
        return Path(systemd.split(":")[0])
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and Path(xdg).is_absolute():
        return Path(xdg) / "mailbot"
    try:
        return Path.home() / ".cache" / "mailbot"
    except (RuntimeError, KeyError):  # no HOME and no passwd entry
        return None


def unsafe_reason(directory: Path) -> str | None:
    """Why this directory must not be trusted with code to run, or None if it may."""
    try:
        info = os.stat(directory)
    except OSError as exc:
        return f"cannot read it: {exc.strerror}"
    if not stat.S_ISDIR(info.st_mode):
        return "not a directory"
    if info.st_uid != os.getuid():
        return f"owned by uid {info.st_uid}, not by mailbot's user (uid {os.getuid()})"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"other users may write to it (mode {stat.S_IMODE(info.st_mode):o})"
    return None


def private_subdirectory(name: str) -> Path | None:
    """``name`` under the default directory, both created 0700 if missing; None when it
    cannot be created or either is not safe (the caller then does without a cache)."""
    base = default_directory()
    if base is None:
        return None
    if unsafe_reason(base) is None and unsafe_reason(base / name) is None:
        return base / name  # the usual case: two stat calls, nothing to create
    try:
        base.mkdir(mode=0o700, parents=True, exist_ok=True)
        if unsafe_reason(base) is not None:
            return None
        (base / name).mkdir(mode=0o700, exist_ok=True)
    except OSError:
        return None
    return None if unsafe_reason(base / name) is not None else base / name
