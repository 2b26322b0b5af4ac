"""How a batch of requests runs: grouped by the settings they share, each group in model calls
of a bounded size, and a failing call retried one request at a time so that only the request
at fault gets the error (docs/serving.md, "Batching")."""

import time
from collections.abc import Callable, Hashable
from typing import Any


def isolated(items: list, per_call: int, run: Callable[[list], list]) -> list:
    """``run`` on calls of ``per_call`` requests; a call that fails (an input only the
    model path refuses, such as a last event too long for the budget) is redone one request
    at a time, so that only the offending request gets the error."""
    out: list[Any] = []
    for i in range(0, len(items), per_call):
        chunk = items[i : i + per_call]
        try:
            out.extend(run(chunk))
        except ValueError as err:
            if len(chunk) == 1:
                out.append(err)
                continue
            for h in chunk:
                try:
                    out.extend(run([h]))
                except ValueError as one:
                    out.append(one)
    return out


def run_grouped(
    items: list,
    key: Callable[[Any], Hashable],
    per_call: Callable[[Any], int],
    run: Callable[[list], list],
) -> tuple[list[Any], float]:
    """``run`` on the items of each group (items of one ``key``, in arrival order) through
    ``isolated``, ``per_call(first item of the group)`` at a time. Returns one result (or
    ValueError) per item, in the items' order, and the seconds spent in ``run``."""
    out: list[Any] = [None] * len(items)
    groups: dict[Hashable, list[int]] = {}
    for i, item in enumerate(items):
        groups.setdefault(key(item), []).append(i)
    seconds = 0.0
    for idx in groups.values():
        size = per_call(items[idx[0]])
        start = time.perf_counter()
        results = isolated([items[i] for i in idx], size, run)
        seconds += time.perf_counter() - start
        for i, r in zip(idx, results, strict=True):
            out[i] = r
    return out, seconds
