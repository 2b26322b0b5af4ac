"""Progress output that suits where it runs, and the third-party noise an entry point mutes.

In a terminal a progress line is redrawn in place; in a file or a Ray job log (not a TTY) a
redrawn line would pile up, so a line is printed only every 10% of the work and at the end.
``quiet_third_party`` is called once by each entry point (jobs, the CLI): it turns Ray
Data's progress bars off outside a terminal and filters the deprecation warnings that the
stack repeats on every call (a run's log would otherwise be mostly copies of them).
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Callable
from typing import TextIO

# Warnings the stack emits on every forward or import, none of them actionable by a user.
KNOWN_WARNINGS = (
    (FutureWarning, r".*is_gradient_checkpointing.*"),
    (FutureWarning, r".*`torch.cuda.amp.*"),
    (UserWarning, r".*TypedStorage is deprecated.*"),
    (DeprecationWarning, r".*"),
)


def interactive(stream: TextIO = sys.stderr) -> bool:
    return bool(getattr(stream, "isatty", lambda: False)())


def progress_printer(label: str, stream: TextIO | None = None) -> Callable[[int, int], None]:
    """A ``progress(done, total)`` callback: redrawn at most once a second in a terminal,
    a line per 10% of the work elsewhere (and always at the end)."""
    out = stream or sys.stderr
    tty = interactive(out)
    start = time.monotonic()
    state = {"last": 0.0, "decile": -1}

    def report(done: int, total: int) -> None:
        now = time.monotonic()
        pct = 100.0 * done / max(total, 1)
        line = f"{label}: {done}/{total} ({pct:.0f}%) {now - start:.1f}s"
        if tty:
            if done == total or now - state["last"] >= 1.0:
                state["last"] = now
                print(f"\r{line}", end="\n" if done == total else "", file=out, flush=True)
            return
        decile = int(pct // 10)
        if done == total or decile > state["decile"]:
            state["decile"] = decile
            print(line, file=out, flush=True)

    return report


def quiet_third_party() -> None:
    """Mute the stack's repeated warnings and, outside a terminal, Ray Data's bars."""
    for category, message in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    if not interactive():
        try:
            from ray.data import DataContext
        except ImportError:  # the CLI's data commands run without Ray
            return
        ctx = DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.enable_operator_progress_bars = False
