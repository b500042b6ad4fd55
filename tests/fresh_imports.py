"""What a fresh interpreter has imported after running some code: start-up tests check
behaviour (a heavy library not loaded), never a timing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def modules_after(code: str) -> set[str]:
    """The full names in ``sys.modules`` after ``code`` ran in a new interpreter on this tree."""
    probe = f"import json, sys\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    run = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    return set(json.loads(run.stdout.splitlines()[-1]))
