"""The regression metrics of OTAD Table V (otbench/metrics.py)."""
from __future__ import annotations

import pytest

from otbench.metrics import e_metric, mse, regression_metrics, smape


# -- the metrics ------------------------------------------------------------------------------------------
def test_metrics_on_hand_computed_arrays():
    y, clean, adv = [5.0, 6.0, 7.0], [5.5, 6.0, 6.0], [6.0, 5.0, 7.5]
    assert mse(adv, y) == pytest.approx((1 + 1 + 0.25) / 3)
    assert e_metric(adv, clean) == pytest.approx((0.5 + 1 + 1.5) / 3)
    # residuals r = (0.5, 0, -1), r~ = (1, -1, 0.5): 2|r~ - r| / (|r~| + |r|) = 1/1.5, 2/1, 3/1.5
    assert smape(adv, clean, y) == pytest.approx((2 / 3 + 2 + 2) / 3)
    assert smape([5.0], [5.0], [5.0]) == 0.0  # 0/0 counts 0
    assert regression_metrics(y, clean, adv)["clean_mse"] == pytest.approx((0.25 + 0 + 1) / 3)
    with pytest.raises(ValueError, match="differ in size"):
        mse([1.0, 2.0], [1.0])
