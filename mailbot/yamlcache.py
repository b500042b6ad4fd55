"""YAML files parsed once: rules.yaml, the templates' meta.yaml and the translations are
read at every start, and PyYAML builds their values in Python even with libyaml (~30 ms of
a ``poll --once``, issue 14, point 9).

The value ``yamlfile.safe_load`` gives for a text is kept in the cache directory
(``mailbot.cachedir``, sub-directory ``yaml``), under the SHA-256 of the text and PyYAML's
version and loader: an edited file is another key, so an entry is never stale. Entries are
pickles read by an unpickler that builds nothing but the safe loader's types (containers,
strings, numbers, dates), so even a damaged or forged file cannot run code. A file that
cannot be read or written, or is not such a pickle, only means parsing the text again.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import yaml

from mailbot import yamlfile
from mailbot.cachedir import private_subdirectory

SUBDIRECTORY = "yaml"
FORMAT = 2  # bump when what is kept changes (2: duplicate keys refused)
# The classes a safe load may give besides the containers pickle builds itself.
_ALLOWED = {("datetime", name) for name in ("date", "datetime", "timedelta", "timezone")}


class _SafeUnpickler(pickle.Unpickler):
    """Builds lists, dicts, sets, strings, numbers and dates; refuses anything else."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return getattr(datetime, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not a YAML value")


def _key(text: str) -> str:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader).__name__  # yamlfile's parser
    head = f"{FORMAT}\0{yaml.__version__}\0{loader}\0".encode()
    return hashlib.sha256(head + text.encode("utf-8", "surrogatepass")).hexdigest()


def safe_load(text: str, directory: Path | None = None) -> Any:
    """``yamlfile.safe_load(text)``, from the cache when this text was parsed before.
    ``directory``: the cache's (default: ``yaml`` under the cache directory, None when
    there is no safe one: the text is parsed)."""
    folder = directory if directory is not None else private_subdirectory(SUBDIRECTORY)
    if folder is None:
        return yamlfile.safe_load(text)
    path = folder / f"{_key(text)}.pickle"
    try:
        return _SafeUnpickler(io.BytesIO(path.read_bytes())).load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError):
        pass  # not there yet, or damaged: parsed below, then kept
    value = yamlfile.safe_load(text)  # a YAML error propagates: nothing is kept
    _keep(path, pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))
    return value


def _keep(path: Path, data: bytes) -> None:
    """Write the entry whole (a reader never sees half of it); a failure only costs time."""
    try:
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".", delete=False) as tmp:
            tmp.write(data)
        os.replace(tmp.name, path)
    except OSError:
        return
