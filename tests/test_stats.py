"""Paired statistics: against scipy's reference functions and small cases with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from cortexflow.evaluation.stats import (
    bootstrap_ci,
    cohens_dz,
    holm_bonferroni,
    paired_comparisons,
    paired_differences,
    paired_test,
    significance_mark,
)
from cortexflow.exceptions import ConfigError


# ------------------------------------------------------------------ Holm
def test_holm_hand_computed_example():
    # sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> raised to 0.06 (monotone)
    adj = holm_bonferroni([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(adj, [0.03, 0.06, 0.06, 0.02])


def test_holm_caps_at_one_ignores_nan_and_keeps_single_p():
    np.testing.assert_allclose(holm_bonferroni([0.5, 0.6]), [1.0, 1.0])
    adj = holm_bonferroni([0.01, np.nan, 0.02])
    assert np.isnan(adj[1])
    np.testing.assert_allclose(adj[[0, 2]], [0.02, 0.02])  # m = 2 comparisons, not 3
    np.testing.assert_allclose(holm_bonferroni([0.03]), [0.03])


# ---------------------------------------------------------- effect size
def test_cohens_dz_hand_examples():
    assert cohens_dz([1.0, 2.0, 3.0]) == pytest.approx(2.0)  # mean 2, sd 1
    # mean 4, sd sqrt(8/3)
    assert cohens_dz([2.0, 4.0, 4.0, 6.0]) == pytest.approx(4 / np.sqrt(8 / 3))
    assert np.isnan(cohens_dz([1.0]))
    assert np.isnan(cohens_dz([0.5, 0.5, 0.5]))


# ------------------------------------------------------------- bootstrap
def test_bootstrap_ci_is_seeded_and_sensible():
    rng = np.random.default_rng(1)
    d = rng.normal(0.3, 1.0, size=400)
    a = bootstrap_ci(d, n_boot=4000, seed=7)
    b = bootstrap_ci(d, n_boot=4000, seed=7)
    assert a == b
    assert a != bootstrap_ci(d, n_boot=4000, seed=8)
    lo, hi = a
    assert lo < d.mean() < hi
    # close to the normal-theory interval mean +- 1.96 sd / sqrt(n)
    half = 1.96 * d.std(ddof=1) / np.sqrt(len(d))
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.1)
    assert bootstrap_ci([0.2, 0.2, 0.2], n_boot=100) == pytest.approx((0.2, 0.2))


# ---------------------------------------------------- tests vs reference
@pytest.mark.parametrize("n", [12, 80])  # exact and normal-approximation regimes of scipy's wilcoxon
def test_paired_test_matches_scipy(n):
    rng = np.random.default_rng(n)
    b = rng.uniform(0.02, 0.08, size=n)
    a = b + rng.normal(0.004, 0.01, size=n)
    r = paired_test(a, b, n_boot=500)
    w = sps.wilcoxon(a, b)
    t = sps.ttest_rel(a, b)
    assert r["n"] == n
    assert r["wilcoxon_stat"] == pytest.approx(w.statistic)
    assert r["wilcoxon_p"] == pytest.approx(w.pvalue)
    assert r["t_stat"] == pytest.approx(t.statistic)
    assert r["t_p"] == pytest.approx(t.pvalue)
    assert r["mean_diff"] == pytest.approx(np.mean(a - b))
    assert r["dz"] == pytest.approx(np.mean(a - b) / np.std(a - b, ddof=1))


def test_paired_test_known_small_cases():
    # all five differences positive: exact two-sided Wilcoxon p = 2 / 2**5
    r = paired_test(np.array([1.0, 2, 3, 4, 5]) + 10, np.full(5, 10.0), n_boot=100)
    assert r["wilcoxon_p"] == pytest.approx(2 / 32)
    assert r["wilcoxon_stat"] == 0.0
    # differences 1, 2, 3: t = 2 / (1 / sqrt 3), df 2; p from the closed-form t(2) cdf
    r = paired_test(np.array([1.0, 2.0, 3.0]), np.zeros(3), n_boot=100)
    t = 2 * np.sqrt(3)
    assert r["t_stat"] == pytest.approx(t)
    assert r["t_p"] == pytest.approx(2 * (1 - (0.5 + t / (2 * np.sqrt(2 + t * t)))))


def test_paired_test_degenerate_inputs():
    r = paired_test(np.ones(6), np.ones(6), n_boot=50)
    assert r["wilcoxon_p"] == 1.0 and r["t_p"] == 1.0 and r["mean_diff"] == 0.0
    r = paired_test(np.array([1.0]), np.array([0.0]), n_boot=50)
    assert np.isnan(r["wilcoxon_p"]) and np.isnan(r["t_p"])
    with pytest.raises(ValueError, match="equal 1-D"):
        paired_test(np.ones(3), np.ones(4))


# --------------------------------------------------------------- pairing
def _tidy(rng, methods=("cccv1", "ridge", "mean-image"), seeds=(0, 1), n_images=10, shift=None):
    rows = []
    shift = shift or {"cccv1": 0.0, "ridge": 0.01, "mean-image": 0.03}
    base = rng.uniform(0.02, 0.06, size=n_images)
    for m in methods:
        for s in seeds:
            for i in range(n_images):
                v = base[i] + shift[m] + rng.normal(0, 0.002)
                rows.append({"dataset": "d", "method": m, "split": "official", "fold": 0, "seed": s, "image": i,
                             "stimulus": i % 5, "mse": v, "pearson": 1 - v})
    return pd.DataFrame(rows)


def test_paired_differences_pairs_same_runs_and_averages_seeds():
    rng = np.random.default_rng(0)
    df = _tidy(rng)
    shuffled = df.sample(frac=1.0, random_state=3)
    p = paired_differences(shuffled, "ridge", "cccv1", "mse")
    assert len(p) == 10  # one pair per image, seeds averaged
    manual = (df[df.method == "ridge"].groupby("image")["mse"].mean()
              - df[df.method == "cccv1"].groupby("image")["mse"].mean())
    np.testing.assert_allclose((p["method_value"] - p["reference_value"]).to_numpy(), manual.to_numpy())
    # an image that one method lacks in one seed is paired only where both exist
    dropped = df.drop(df[(df.method == "ridge") & (df.seed == 1) & (df.image == 0)].index)
    p2 = paired_differences(dropped, "ridge", "cccv1", "mse")
    row0 = p2[p2.image == 0].iloc[0]
    ref0 = df[(df.method == "cccv1") & (df.seed == 0) & (df.image == 0)]["mse"].iloc[0]
    assert row0["reference_value"] == pytest.approx(ref0)
    # unit="stimulus": images 0 and 5 show stimulus 0, ... -> 5 units
    assert len(paired_differences(df, "ridge", "cccv1", "mse", unit="stimulus")) == 5


def test_paired_comparisons_holm_within_family_and_direction():
    rng = np.random.default_rng(2)
    st = paired_comparisons(_tidy(rng), reference="cccv1", metrics=["mse", "pearson"], n_boot=300)
    assert set(st["method"]) == {"ridge", "mean-image"}
    assert (st["reference"] == "cccv1").all() and (st["n"] == 10).all()
    for _, g in st.groupby(["dataset", "split", "metric"]):
        np.testing.assert_allclose(g["wilcoxon_p_holm"], holm_bonferroni(g["wilcoxon_p"].to_numpy()))
        np.testing.assert_allclose(g["t_p_holm"], holm_bonferroni(g["t_p"].to_numpy()))
    # ridge and mean-image have higher MSE and lower pearson than cccv1: the reference is better in both
    assert (st["better"] == "reference").all()
    mse = st[st.metric == "mse"].set_index("method")
    assert mse.loc["mean-image", "mean_diff"] == pytest.approx(0.03, abs=0.002)
    assert mse.loc["mean-image", "ci_low"] < mse.loc["mean-image", "mean_diff"] < mse.loc["mean-image", "ci_high"]
    assert set(st["mark"]) <= {"***", "**", "*", "ns"}


def test_paired_comparisons_needs_reference():
    rng = np.random.default_rng(0)
    df = _tidy(rng, methods=("ridge", "mean-image"))
    with pytest.raises(ConfigError, match="reference method 'cccv1'"):
        paired_comparisons(df, reference="cccv1", metrics=["mse"])


def test_significance_marks():
    assert [significance_mark(p) for p in (0.0001, 0.005, 0.04, 0.2)] == ["***", "**", "*", "ns"]
    assert significance_mark(float("nan")) == ""
