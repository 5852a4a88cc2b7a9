import math

import numpy as np
import pytest

from synpref.rm.metrics import pairwise_accuracy


def test_pairwise_accuracy_counts_ties_as_wrong():
    assert pairwise_accuracy([2.0, 1.0, 0.5, 3.0], [1.0, 1.0, 0.7, -1.0]) == 0.5
    assert pairwise_accuracy(np.array([1.0, 2.0]), np.array([0.0, 3.0])) == 0.5
    assert math.isnan(pairwise_accuracy([], []))
    with pytest.raises(ValueError, match="2 chosen rewards but 1 rejected"):
        pairwise_accuracy([1.0, 2.0], [0.0])
