"""End to end on simulated EEG: EEG front-end + CCCV1 identify class images above chance;
the same pipeline with shuffled training labels stays at chance.

The simulation (1/f background, alpha, line noise, blinks, class-dependent
evoked components) is documented in :mod:`cortexflow.data.eeg.simulate`.
"""

from __future__ import annotations

import numpy as np
import pytest

from cortexflow.benchmark.eeg import simulated_identification

# A narrower CCCV1 (same architecture, widths 256/128) keeps the default test fast on a CPU.
FAST = {"hidden_dim": 256, "embed_dim": 128, "epochs": 60, "patience": 10, "batch_size": 16, "lr": 1e-3,
        "lr_patience": 4}


def test_eegnet_identifies_classes_and_shuffled_labels_stay_at_chance():
    kw = dict(n_classes=4, n_per_class=50, seed=0, config=FAST)
    real = simulated_identification("eegnet", **kw)
    shuffled = simulated_identification("eegnet", shuffle_labels=True, **kw)
    assert real["n_test"] >= 45 and real["n_rejected"] < 20
    # chance is 0.5; with 4 classes, same-class pairs tie, so a perfect decoder scores about 0.87
    assert real["two_way"] >= 0.65, real
    assert real["class_accuracy"] >= 0.45, real  # chance 0.25
    assert abs(shuffled["two_way"] - 0.5) <= 0.1, shuffled
    assert real["two_way"] - shuffled["two_way"] >= 0.15


@pytest.mark.slow
@pytest.mark.parametrize("frontend", ["eegnet", "shallow", "flatten"])
def test_ten_digits_full_cccv1(frontend):
    """The documented setting: 10 digit classes, 40 trials each, CCCV1 with config='auto'."""
    real = [simulated_identification(frontend, seed=s)["two_way"] for s in (0, 1)]
    shuffled = [simulated_identification(frontend, seed=s, shuffle_labels=True)["two_way"] for s in (0, 1)]
    assert abs(np.mean(shuffled) - 0.5) <= 0.08
    if frontend == "eegnet":
        assert np.mean(real) >= 0.6
    assert np.mean(real) > np.mean(shuffled)
