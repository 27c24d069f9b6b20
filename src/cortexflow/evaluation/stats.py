"""Paired statistics of reconstruction metrics: every method against a reference.

Pairing
-------
A method's row and the reference's row are paired when they share
``dataset, split, fold, seed, image``: the same test image, scored after
training on the same rows with the same model seed. Pairs are then averaged
over seeds (and over folds, where an image is tested in one fold only), so
that each test image contributes **one** paired difference: seeds of the same
image are not independent observations and are not counted as such.
With ``unit="stimulus"`` the differences are averaged further over every test
row that shows the same stimulus (repeated trials of one image, as in
miyawaki), so that each unique stimulus is one observation.

What stays non-independent
--------------------------
In K-fold splits the training sets of different folds overlap, so the
per-image differences of different folds are correlated (Nadeau and Bengio
2003); repeated trials of one stimulus are correlated unless
``unit="stimulus"``. The p-values therefore describe these test images under
this protocol, and are optimistic as statements about new data; the effect
size and the bootstrap interval of the mean difference are the more useful
numbers.

Tests
-----
Wilcoxon signed-rank (two-sided, zeros dropped as in ``scipy.stats.wilcoxon``
by default) and the paired t-test, Holm-Bonferroni adjustment within each
family (by default one family per dataset, split and metric: the comparisons
of every method with the reference), Cohen's d_z (mean difference over the
standard deviation of the differences) and a seeded percentile bootstrap 95 %
confidence interval of the mean difference. Differences are ``method -
reference``: for ``mse`` a negative difference means the method is better;
for every other metric a positive one.
"""

from __future__ import annotations

import logging
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

from cortexflow.exceptions import ConfigError

__all__ = [
    "sign_flip_pvalue",
    "holm_bonferroni",
    "cohens_dz",
    "bootstrap_ci",
    "paired_test",
    "paired_differences",
    "paired_comparisons",
    "significance_mark",
    "LOWER_IS_BETTER",
    "UNITS",
]

logger = logging.getLogger(__name__)

LOWER_IS_BETTER = frozenset({"mse"})
UNITS = ("image", "stimulus")
PAIR_KEYS = ("dataset", "split", "fold", "seed", "image")


def holm_bonferroni(pvalues: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1).

    NaN p-values are left NaN and do not count as comparisons.

    >>> holm_bonferroni([0.01, 0.04, 0.03]).round(4).tolist()
    [0.03, 0.06, 0.06]
    """
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = len(ok)
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def sign_flip_pvalue(diff: Sequence[float], *, n_perm: int = 10_000, seed: int = 0) -> float:
    """Two-sided sign-flip permutation p-value of the mean of paired differences.

    Each permutation flips the sign of every difference at random (the null:
    the two conditions are exchangeable within a pair); ``p = (1 + #{|mean*|
    >= |mean|}) / (1 + n_perm)``. NaN for no differences; 1.0 when all are 0.

    >>> sign_flip_pvalue([0.0, 0.0])
    1.0
    """
    d = np.asarray(diff, dtype=np.float64)
    if d.size == 0:
        return float("nan")
    obs = abs(d.mean())
    if obs == 0:
        return 1.0
    rng = np.random.default_rng(seed)
    hits = 0
    for start in range(0, n_perm, 1000):
        k = min(1000, n_perm - start)
        signs = rng.choice((-1.0, 1.0), size=(k, d.size))
        hits += int((np.abs((signs * d).mean(axis=1)) >= obs - 1e-15).sum())
    return (1 + hits) / (1 + n_perm)


def cohens_dz(diff: Sequence[float]) -> float:
    """Cohen's d_z of paired differences: mean / sample standard deviation (ddof=1).

    NaN for fewer than two differences or a zero standard deviation.
    """
    d = np.asarray(diff, dtype=float)
    if len(d) < 2:
        return float("nan")
    sd = d.std(ddof=1)
    return float(d.mean() / sd) if sd > 0 else float("nan")


def bootstrap_ci(diff: Sequence[float], *, n_boot: int = 10_000, confidence: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean of ``diff`` (seeded)."""
    d = np.asarray(diff, dtype=float)
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence={confidence} must lie in (0, 1)")
    if len(d) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    chunk = 1000
    for start in range(0, n_boot, chunk):
        k = min(chunk, n_boot - start)
        means[start : start + k] = d[rng.integers(0, len(d), size=(k, len(d)))].mean(axis=1)
    a = (1 - confidence) / 2
    lo, hi = np.quantile(means, [a, 1 - a])
    return float(lo), float(hi)


def paired_test(a: Sequence[float], b: Sequence[float], *, n_boot: int = 10_000, seed: int = 0) -> dict:
    """Compare paired samples ``a`` (method) and ``b`` (reference).

    Returns
    -------
    dict
        ``n, mean_a, mean_b, mean_diff, ci_low, ci_high, dz, wilcoxon_stat,
        wilcoxon_p, t_stat, t_p`` (differences are ``a - b``). When every
        difference is zero the p-values are 1; with fewer than two pairs NaN.
    """
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired samples need equal 1-D shapes; got {a.shape} and {b.shape}")
    d = a - b
    n = len(d)
    res = {"n": n, "mean_a": float(a.mean()) if n else np.nan, "mean_b": float(b.mean()) if n else np.nan,
           "mean_diff": float(d.mean()) if n else np.nan}
    lo, hi = bootstrap_ci(d, n_boot=n_boot, seed=seed)
    res.update(ci_low=lo, ci_high=hi, dz=cohens_dz(d))
    if n < 2:
        res.update(wilcoxon_stat=np.nan, wilcoxon_p=np.nan, t_stat=np.nan, t_p=np.nan)
    elif np.all(d == 0):
        res.update(wilcoxon_stat=np.nan, wilcoxon_p=1.0, t_stat=0.0, t_p=1.0)
    else:
        w = sps.wilcoxon(a, b)
        t = sps.ttest_rel(a, b)
        res.update(wilcoxon_stat=float(w.statistic), wilcoxon_p=float(w.pvalue),
                   t_stat=float(t.statistic), t_p=float(t.pvalue))
    return res


def paired_differences(results: pd.DataFrame, method: str, reference: str, metric: str,
                       unit: str = "image") -> pd.DataFrame:
    """Matched values of ``method`` and ``reference`` for one dataset/split subset of ``results``.

    Rows are matched on ``dataset, split, fold, seed, image`` (inner join: a
    pair exists only where both methods scored the same image in the same
    run), then averaged over seeds per ``(dataset, split, fold, image)``, or
    per ``(dataset, split, stimulus)`` for ``unit="stimulus"``.

    Returns
    -------
    DataFrame
        Columns ``method_value``, ``reference_value`` (one row per unit).
    """
    if unit not in UNITS:
        raise ConfigError(f"unit={unit!r}; allowed: {', '.join(UNITS)}")
    keys = list(PAIR_KEYS)
    cols = keys + (["stimulus"] if "stimulus" in results.columns else []) + [metric]
    a = results.loc[results["method"] == method, cols]
    b = results.loc[results["method"] == reference, keys + [metric]]
    m = a.merge(b, on=keys, suffixes=("_m", "_r"), validate="one_to_one")
    m = m.rename(columns={f"{metric}_m": "method_value", f"{metric}_r": "reference_value"})
    m = m.dropna(subset=["method_value", "reference_value"])
    if unit == "image":
        group = ["dataset", "split", "fold", "image"]
    else:
        if "stimulus" not in m.columns:
            raise ConfigError("unit='stimulus' needs a 'stimulus' column in the results")
        group = ["dataset", "split", "stimulus"]
    return m.groupby(group, sort=True)[["method_value", "reference_value"]].mean().reset_index()


def significance_mark(p: float) -> str:
    """``***`` p < 0.001, ``**`` p < 0.01, ``*`` p < 0.05, ``ns`` otherwise, empty for NaN."""
    if p is None or np.isnan(p):
        return ""
    return "***" if p < 0.001 else "**" if p < 0.01 else "*" if p < 0.05 else "ns"


def paired_comparisons(
    results: pd.DataFrame,
    reference: str = "cccv1",
    metrics: Iterable[str] = ("mse", "pearson", "ssim", "psnr", "two_way"),
    *,
    unit: str = "image",
    family: Sequence[str] = ("dataset", "split", "metric"),
    n_boot: int = 10_000,
    seed: int = 0,
) -> pd.DataFrame:
    """Compare every method with ``reference`` on every dataset, split and metric.

    Parameters
    ----------
    results : DataFrame
        Tidy per-image results (``dataset, method, split, fold, seed, image``
        and the metric columns).
    reference : str
        The method all others are compared with.
    metrics : iterable of str
    unit : {"image", "stimulus"}
        Observation unit after averaging (see the module docstring).
    family : sequence of str
        Columns defining a Holm-Bonferroni family.
    n_boot, seed : int
        Bootstrap resamples and seed.

    Returns
    -------
    DataFrame
        One row per (dataset, split, metric, method) with the fields of
        :func:`paired_test`, ``better`` (method, reference or tie by the mean),
        ``wilcoxon_p_holm``, ``t_p_holm`` and ``mark`` (from the Holm-adjusted
        Wilcoxon p-value).
    """
    metrics = list(metrics)
    missing = [c for c in ["dataset", "method", "split", "fold", "seed", "image", *metrics] if c not in results.columns]
    if missing:
        raise ConfigError(f"results lack column(s) {missing}")
    out = []
    if reference not in set(results["method"]):
        raise ConfigError(f"reference method {reference!r} has no results; methods present: {sorted(set(results['method']))}")
    for (ds, split), sub in results.groupby(["dataset", "split"], sort=True):
        others = [m for m in pd.unique(sub["method"]) if m != reference]
        for metric in metrics:
            for method in others:
                pairs = paired_differences(sub, method, reference, metric, unit)
                if len(pairs) == 0:
                    logger.warning("no paired results for %s vs %s on %s/%s", method, reference, ds, split)
                    continue
                r = paired_test(pairs["method_value"].to_numpy(), pairs["reference_value"].to_numpy(),
                                n_boot=n_boot, seed=seed)
                diff = r["mean_diff"]
                sign = -1 if metric in LOWER_IS_BETTER else 1
                better = "tie" if diff == 0 else ("method" if sign * diff > 0 else "reference")
                out.append({"dataset": ds, "split": split, "metric": metric, "method": method,
                            "reference": reference, "unit": unit, "better": better, **r})
    cols = ["dataset", "split", "metric", "method", "reference", "unit", "n", "mean_a", "mean_b", "mean_diff",
            "ci_low", "ci_high", "dz", "wilcoxon_stat", "wilcoxon_p", "t_stat", "t_p", "better"]
    df = pd.DataFrame(out, columns=cols).rename(columns={"mean_a": "mean_method", "mean_b": "mean_reference"})
    df["wilcoxon_p_holm"] = np.nan
    df["t_p_holm"] = np.nan
    if len(df):
        for _, idx in df.groupby(list(family)).groups.items():
            df.loc[idx, "wilcoxon_p_holm"] = holm_bonferroni(df.loc[idx, "wilcoxon_p"].to_numpy())
            df.loc[idx, "t_p_holm"] = holm_bonferroni(df.loc[idx, "t_p"].to_numpy())
    df["mark"] = [significance_mark(p) for p in df["wilcoxon_p_holm"]]
    return df
