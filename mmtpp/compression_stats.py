"""Compression figures for a dataset under one rule (design §4): events compressed, tokens per
event and, above all, how many of the most recent events fit in a token budget with backward
compression (the fine-tuning prompt's view) against none (``mmtpp.compression`` holds the
rules and their masks).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np

from mmtpp.compression import CompressionRule, compressed_costs, events_in_budget, mask


@dataclass(frozen=True)
class CompressionStats:
    """Compression figures for one dataset under one rule (design §4).

    ``events_per_budget`` is the mean, over sequences, of the number of most recent events that
    fit in ``budget`` tokens with backward compression (the fine-tuning prompt's view), and
    ``events_per_budget_uncompressed`` the same at Δ = 0. Sequences whose events all fit are
    counted in ``capped_sequences``: for them the figure is a lower bound.
    """

    delta: float
    budget: int
    num_sequences: int
    num_events: int
    compressed_events: int
    tokens_uncompressed: int
    tokens_compressed: int
    tokens_per_event: float
    tokens_per_event_uncompressed: float
    compression_ratio: float
    events_per_budget: float
    events_per_budget_uncompressed: float
    capped_sequences: int
    mode: str = "absolute"
    keep_type: bool = False

    @property
    def compressed_fraction(self) -> float:
        return self.compressed_events / max(self.num_events, 1)

    @property
    def gain(self) -> float:
        """Events per budget relative to Δ = 0."""
        return self.events_per_budget / max(self.events_per_budget_uncompressed, 1e-12)

    def to_dict(self) -> dict:
        return asdict(self)


def _as_rule(rule: CompressionRule | float) -> CompressionRule:
    return rule if isinstance(rule, CompressionRule) else CompressionRule("absolute", rule)


def compression_stats(
    sequences: Iterable[tuple[np.ndarray, ...]],
    rule: CompressionRule | float,
    budget: int,
) -> CompressionStats:
    """Statistics over ``(gaps, event_costs)`` or ``(gaps, event_costs, types)`` tuples, one
    per sequence, under ``rule`` (a bare number is the ``absolute`` rule at that Δ; the
    ``typed`` rule needs the types).

    ``event_costs[i]`` is the number of tokens event i takes when rendered in full.
    """
    rule = _as_rule(rule)
    n_seq = n_events = n_comp = tok_full = tok_comp = capped = 0
    fit_comp: list[int] = []
    fit_full: list[int] = []
    for s, item in enumerate(sequences):
        gaps, costs = item[0], np.asarray(item[1], dtype=np.int64)
        types = item[2] if len(item) > 2 else None
        if rule.needs_types and types is None:
            raise ValueError(f"sequence {s}: the typed rule needs (gaps, costs, types) tuples")
        m = mask(rule, gaps, types, "backward", keep_last=True)
        comp = compressed_costs(costs, m, rule.compressed_tokens)
        n_seq += 1
        n_events += costs.size
        n_comp += int(m.sum())
        tok_full += int(costs.sum())
        tok_comp += int(comp.sum())
        fit_comp.append(events_in_budget(comp, budget))
        fit_full.append(events_in_budget(costs, budget))
        capped += int(fit_comp[-1] == costs.size)
    return CompressionStats(
        delta=rule.delta,
        budget=int(budget),
        num_sequences=n_seq,
        num_events=n_events,
        compressed_events=n_comp,
        tokens_uncompressed=tok_full,
        tokens_compressed=tok_comp,
        tokens_per_event=tok_comp / max(n_events, 1),
        tokens_per_event_uncompressed=tok_full / max(n_events, 1),
        compression_ratio=tok_full / max(tok_comp, 1),
        events_per_budget=float(np.mean(fit_comp)) if fit_comp else 0.0,
        events_per_budget_uncompressed=float(np.mean(fit_full)) if fit_full else 0.0,
        capped_sequences=capped,
        mode=rule.mode,
        keep_type=rule.keep_type,
    )
