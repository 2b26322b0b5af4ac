"""Progress output that suits where it runs, and the third-party noise an entry point mutes.

In a terminal a progress line is redrawn in place; in a file or a Ray job log (not a TTY) a
redrawn line would pile up, so a line is printed only every 10% of the work and at the end.
``quiet_third_party`` is called once by each entry point (jobs, the CLI): it turns Ray
Data's progress bars off outside a terminal and filters the deprecation warnings that the
stack repeats on every call (a run's log would otherwise be mostly copies of them).
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections.abc import Callable
from typing import TextIO

# Warnings the stack emits on every forward or import, none of them actionable by a user.
KNOWN_WARNINGS = (
    (FutureWarning, r".*is_gradient_checkpointing.*"),
    (FutureWarning, r".*all_gather_into_tensor.*"),  # DeepSpeed's ZeRO on torch 2.13
    (FutureWarning, r".*`torch.cuda.amp.*"),
    (UserWarning, r".*TypedStorage is deprecated.*"),
    (DeprecationWarning, r".*"),
)


def interactive(stream: TextIO | None = None) -> bool:
    """Whether ``stream`` (default: the current ``sys.stderr``) is a terminal."""
    stream = sys.stderr if stream is None else stream
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
        # transformers' weight-loading bars (read when transformers is first imported: here
        # and in the Ray workers this process starts, which inherit the environment)
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        try:
            from ray.data import DataContext
        except ImportError:  # the CLI's data commands run without Ray
            return
        ctx = DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.enable_operator_progress_bars = False


def say(line: str) -> None:
    """One line on stdout, written once. Ray Train patches ``print`` in its workers to go
    through its logger as well, which repeats every line in a job's log."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def quiet_train_worker() -> None:
    """In a Ray Train worker: the stack's warnings muted, and Train's per-report INFO line
    (one per ``ray.train.report``, hundreds per run) kept out of the job's log."""
    import logging

    quiet_third_party()
    try:
        from ray.train.v2._internal.execution import context
    except ImportError:  # another Ray Train version: its lines stay
        return
    logging.getLogger(context.__file__).setLevel(logging.WARNING)
