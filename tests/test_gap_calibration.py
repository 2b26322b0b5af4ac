"""Calibration summaries of predictive gap distributions, on a hand case."""

from __future__ import annotations

import numpy as np
import pytest

from mmtpp.gap_calibration import calibration


def test_calibration_summary_of_a_hand_case():
    pit = np.array([0.05, 0.15, 0.15, 0.95, 1.0])
    y = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    intervals = {0.5: (y - 0.5, y + 0.5), 0.9: (np.zeros(5), np.array([9, 9, 9, 3, 3.0]))}
    crps = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    cal = calibration(pit, y, intervals, crps)
    assert cal.targets == 5
    assert cal.pit_counts == [1, 2, 0, 0, 0, 0, 0, 0, 0, 2]
    assert cal.coverage[0.5].estimate == 1.0 and cal.coverage[0.9].estimate == 0.6
    assert cal.width[0.9] == pytest.approx(6.6)
    assert cal.crps.estimate == pytest.approx(0.3)
    assert 0.1 <= cal.crps.low < 0.3 < cal.crps.high <= 0.5
    # the empirical CDF jumps to 0.6 at 0.15: 0.45 above the uniform
    assert cal.pit_ks == pytest.approx(0.45)
    assert cal.to_dict()["coverage"][0.9]["estimate"] == 0.6
    with pytest.raises(ValueError, match="one value per target"):
        calibration(pit, y[:4], intervals, crps)
    with pytest.raises(ValueError, match="PIT values must lie in"):
        calibration(pit + 0.5, y, intervals, crps)
