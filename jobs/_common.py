"""The Ray job entrypoints run the `recmind-dist` commands themselves (same functions, same
options, same errors): ``python jobs/train.py ARGS`` is ``recmind-dist train ARGS``.

``ray job submit --working-dir . -- python jobs/<command>.py ...`` needs no installed console
script: the checkout is put on ``sys.path``. ``--workers N`` is kept as a shortcut for
``--set train.workers=N``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout


def expand_workers(argv: list[str]) -> list[str]:
    """``--workers N`` / ``--workers=N`` -> ``--set train.workers=N``."""
    out: list[str] = []
    it = iter(argv)
    for a in it:
        if a == "--workers":
            out += ["--set", f"train.workers={next(it, '')}"]
        elif a.startswith("--workers="):
            out += ["--set", f"train.workers={a.split('=', 1)[1]}"]
        else:
            out.append(a)
    return out


def run_command(command: str, argv: list[str] | None = None) -> None:
    """Run ``recmind-dist <command>`` with ``argv`` (default: this process's arguments)."""
    from recmind_dist.cli import app

    args = expand_workers(sys.argv[1:] if argv is None else argv)
    app(args=[command, *args], prog_name=f"jobs/{command}.py")
