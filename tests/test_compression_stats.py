"""Compression figures of a dataset under each rule, on hand cases."""

import numpy as np
import pytest

from mmtpp.compression import CompressionRule
from mmtpp.compression_stats import compression_stats


def test_stats_count_compression():
    gaps = np.array([0.0, 1.0, 1.0, 1.0, 1.0, 9.0])
    costs = np.full(6, 10)
    s0, s2 = (compression_stats([(gaps, costs)], d, budget=25) for d in (0.0, 0.2))
    assert s0.events_per_budget == 2 and s0.compression_ratio == 1.0
    # backward, keep_last: events 1..3 compressed -> costs 10,1,1,1,10,10
    assert s2.compressed_events == 3
    assert s2.tokens_compressed == 33 and s2.compression_ratio == pytest.approx(60 / 33)
    assert s2.events_per_budget == 5  # 10 + 10 + 1 + 1 + 1 = 23 <= 25; the first adds 10
    assert s2.events_per_budget_uncompressed == 2 and s2.capped_sequences == 0


def test_stats_per_rule_and_keep_type_cost():
    gaps = np.array([0.0, 300.0, 100.0, 110.0, 105.0, 1.0])
    types = np.array([0, 1, 1, 1, 0, 0])
    costs = np.full(6, 10)
    absolute = compression_stats([(gaps, costs, types)], 0.2, budget=25)
    assert absolute.compressed_events == 0 and absolute.mode == "absolute"
    # backward, keep_last: relative compresses events 2 and 3 (×1.1, ×1.05 apart); typed only
    # event 2 (event 3's successor has another type)
    rel = compression_stats([(gaps, costs, types)], CompressionRule("relative", 0.2), 25)
    typed = compression_stats([(gaps, costs, types)], CompressionRule("typed", 0.2), 25)
    kept = compression_stats([(gaps, costs, types)], CompressionRule("relative", 0.2, True), 25)
    assert (rel.compressed_events, typed.compressed_events) == (2, 1)
    assert rel.tokens_compressed == 42 and kept.tokens_compressed == 44
    assert kept.keep_type and kept.to_dict()["keep_type"]
    assert rel.compressed_fraction == pytest.approx(2 / 6)
    # 10 + 10 + 1 + 1 = 22 <= 25 (4 events) against 10 + 10 uncompressed; keep_type: 24
    assert rel.events_per_budget == 4 and rel.gain == 2 and kept.events_per_budget == 4
    assert typed.events_per_budget == 2
    with pytest.raises(ValueError, match="sequence 0: the typed rule needs"):
        compression_stats([(gaps, costs)], CompressionRule("typed", 0.2), 25)
