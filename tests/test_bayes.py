"""Target indexing shared by every exact predictor."""

import numpy as np
import pytest

from mmtpp.bayes import BayesPredictions, check_history, target_indices


def test_targets_default_to_every_event_after_the_first():
    assert target_indices(None, 5, 4).tolist() == [1, 2, 3, 4]
    assert target_indices([2, 5], 5, 5).dtype == np.int64  # n: the event after the history
    for bad in ([0], [6], [[1, 2]], [1.5]):
        with pytest.raises(ValueError, match="targets"):
            target_indices(bad, 5, 5)


def test_history_is_all_or_a_positive_count():
    for ok in (None, 1, np.int64(14)):
        check_history(ok)
    for bad in (0, -3, True, 2.0):
        with pytest.raises(ValueError, match="history"):
            check_history(bad)


def test_the_most_probable_type_is_the_argmax():
    probs = np.array([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]])
    empty = np.zeros(2)
    assert BayesPredictions(
        empty, empty, probs, empty, empty, empty
    ).most_probable_type.tolist() == [1, 0]
