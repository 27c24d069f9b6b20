"""The method registry: one spec per method, typed options, registration errors, and the guard set.

The leak tests write a user file (not registered) whose test stimuli are images
of the generated ``miyawaki-patterns`` corpus, and check that every
prior-backed method drops them from its prior's corpus in ``benchmark``,
``train`` and ``evaluate``.
"""

from __future__ import annotations

import importlib.metadata
import json
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from cortexflow.benchmark.runner import BenchmarkConfig, run_benchmark
from cortexflow.cli.main import cli
from cortexflow.exceptions import ConfigError
from cortexflow.registry import methods as registry
from cortexflow.methods.build import make_estimator, scored_stimuli
from cortexflow.registry.methods import (
    METHODS,
    check_options,
    get_method,
    list_methods,
    register_method,
    unregister_method,
)
from cortexflow.models.base import COMMON_STATE, BaseDecoder
from cortexflow.models.checkpoint import StateField
from cortexflow.data.corpora import load_corpus
from cortexflow.data.generators import miyawaki_patterns

PRIOR_METHODS = [m for m in list_methods() if "prior" in get_method(m).needs]
FAST_PRIOR = '{"epochs": 1, "max_images": 300, "embed_dim": 8, "widths": [4, 8, 8]}'
N_LEAKED = 5


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CORTEXFLOW_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _leaky_file(path, seed=0):
    """A user .npz whose 5 test stimuli are exact images of the miyawaki-patterns corpus."""
    rng = np.random.default_rng(seed)
    corpus = load_corpus("miyawaki-patterns").images
    test = corpus[[3, 50, 200, 400, 700]].astype(np.float32)
    train, _ = miyawaki_patterns(n_random=24, n_shapes=0, seed=1234)
    W = rng.normal(size=(784, 40))
    np.savez(path, fmriTrn=(train.reshape(24, -1) @ W + rng.normal(size=(24, 40))).astype(np.float32),
             stimTrn=train.astype(np.float32), fmriTest=(test.reshape(N_LEAKED, -1) @ W).astype(np.float32),
             stimTest=test)
    return path


def _sets(method: str) -> list[str]:
    return ["prior=miyawaki-patterns", f"prior_config={FAST_PRIOR}"]


# ---------------------------------------------------------------- the guard set, every path
def test_every_prior_method_needs_the_guard_set():
    assert {"ridge-prior", "ridge-prior-stacked", "cccv1-prior", "brain-diffuser-prior", "mindvis-prior"} <= set(
        PRIOR_METHODS)
    for m in PRIOR_METHODS:
        assert get_method(m).needs_stimuli
        with pytest.raises(ConfigError, match="needs stimuli="):
            make_estimator(m, 0, "user.npz", 24, fast=True)


@pytest.mark.parametrize("method", PRIOR_METHODS)
def test_benchmark_guards_a_user_file_against_its_test_stimuli(method, tmp_path, cache):
    path = _leaky_file(tmp_path / "user.npz")
    opts = {"prior": "miyawaki-patterns", "prior_config": json.loads(FAST_PRIOR)}
    out = tmp_path / "bench"
    run_benchmark(BenchmarkConfig(str(path), method, splits="official", seeds=1, fast=True, out=str(out),
                                  method_options={method: opts}), progress=False)
    records = [json.loads(p.read_text()) for p in (out / "runs").glob("*.json")]
    assert records and all(r["report_info"]["prior_n_dropped"] >= N_LEAKED for r in records)
    summary = (out / "summary.md").read_text()
    assert "prior_n_dropped" in summary or "dropped" in summary


@pytest.mark.parametrize("method", ["ridge-prior", "cccv1-prior", "brain-diffuser-prior", "mindvis-prior"])
def test_train_guards_and_evaluate_refuses_a_leaking_checkpoint(method, tmp_path, cache):
    leaky = _leaky_file(tmp_path / "user.npz")
    run = CliRunner().invoke(cli, ["train", "--dataset", str(leaky), "--method", method, "--out", str(tmp_path / "t"),
                                   "--no-progress", *sum((["--set", s] for s in _sets(method)), [])]
                             + (["--set", "epochs=2", "--set", "hidden_dim=32"] if method == "cccv1-prior" else [])
                             + (["--set", "vae_epochs=2", "--set", "denoiser_epochs=2", "--set", "steps=2"]
                                if method == "brain-diffuser-prior" else [])
                             + (["--set", "pretrain_epochs=1", "--set", "fine_tune_epochs=1", "--set", "dim=16",
                                 "--set", "depth=1"] if method == "mindvis-prior" else []))
    assert run.exit_code == 0, run.output
    metrics = json.loads((tmp_path / "t" / "metrics.json").read_text())
    assert metrics["report_info"]["prior_n_dropped"] >= N_LEAKED
    # evaluate on the same file: the corpus this model kept holds no test image
    ok = CliRunner().invoke(cli, ["evaluate", "--checkpoint", str(tmp_path / "t"), "--dataset", str(leaky)])
    assert ok.exit_code == 0, ok.output


def test_evaluate_refuses_scoring_images_a_checkpoint_kept_in_its_corpus(tmp_path, cache):
    """A ridge-prior model trained on other images keeps the corpus images; scoring them stops with a clear error."""
    rng = np.random.default_rng(3)
    clean = tmp_path / "clean.npz"
    train, _ = miyawaki_patterns(n_random=30, n_shapes=0, seed=77)
    W = rng.normal(size=(784, 40))
    X = (train.reshape(30, -1) @ W).astype(np.float32)
    np.savez(clean, fmriTrn=X[:24], stimTrn=train[:24], fmriTest=X[24:], stimTest=train[24:])
    run = CliRunner().invoke(cli, ["train", "--dataset", str(clean), "--method", "ridge-prior", "--out",
                                   str(tmp_path / "t"), "--no-progress", *sum((["--set", s] for s in
                                                                               _sets("ridge-prior")), [])])
    assert run.exit_code == 0, run.output
    leaky = _leaky_file(tmp_path / "user.npz")
    bad = CliRunner().invoke(cli, ["evaluate", "--checkpoint", str(tmp_path / "t"), "--dataset", str(leaky)])
    assert bad.exit_code == 2, bad.output
    assert "near-duplicates" in bad.output and f"{N_LEAKED} of the {N_LEAKED} scored stimuli" in bad.output


def test_the_builder_hands_every_scored_stimulus(tmp_path, cache):
    from cortexflow.data.loading import load_dataset

    ds = load_dataset(str(_leaky_file(tmp_path / "user.npz")))
    est = make_estimator("ridge-prior", 0, ds.name, len(ds.X_train), fast=True, stimuli=scored_stimuli(ds),
                         prior="miyawaki-patterns", prior_config=json.loads(FAST_PRIOR))
    assert len(est.stimuli) == len(ds.Y_train) + len(ds.Y_test)
    assert est.prior.info["n_dropped"] >= N_LEAKED and est.prior.corpus_images is not None


# ---------------------------------------------------------------- typed options
@pytest.mark.parametrize("options, message", [
    ({"knn": 0}, "knn=0 is below its minimum 1"),
    ({"knn": "ten"}, "knn='ten' is a str; allowed: int"),
    ({"decoding": "telepathy"}, "decoding='telepathy' is not allowed; allowed: 'hybrid', 'prior', 'corpus-knn'"),
    ({"knnn": 3}, r"has no option 'knnn' \(did you mean knn\?\)"),
    ({"prior": ["mnist-t10k"]}, "prior=\\['mnist-t10k'\\] is a list; allowed: str"),
])
def test_options_are_checked_by_type_range_and_choice(options, message):
    with pytest.raises(ConfigError, match=message):
        check_options("ridge-prior", options)


def test_every_registered_method_has_typed_options_and_a_description():
    for name in list_methods():
        spec = get_method(name)
        assert spec.description and spec.label, name
        for o in spec.options:
            assert o.kinds and all(k in ("int", "float", "bool", "str", "list", "dict", "any") for k in o.kinds), name
            assert o.name not in registry.RUNTIME_PARAMS, (name, o.name)


def test_train_accepts_every_method_with_a_checkpoint():
    from cortexflow.cli.main import _train_methods

    assert _train_methods() == [m for m in list_methods() if get_method(m).checkpoint_kind]
    r = CliRunner().invoke(cli, ["train", "--help"])
    assert r.exit_code == 0
    bad = CliRunner().invoke(cli, ["train", "--dataset", "x.npz", "--method", "rigde-prior"])
    assert bad.exit_code == 2 and "did you mean ridge-prior" in bad.output


# ---------------------------------------------------------------- a method defined only here
class _HalfMeanDecoder(BaseDecoder):
    """Half the mean training image (a method defined in a test file).

    Parameters
    ----------
    scale : float
        Factor applied to the mean image.
    """

    checkpoint_kind = "half-mean"
    checkpoint_schema = {**COMMON_STATE, "mean_": StateField("array", shape=("*image",))}

    def __init__(self, scale: float = 0.5, random_state: int = 0):
        self.scale = scale
        self.random_state = random_state

    def fit(self, X, Y):
        X, Y = self._validate_fit_input(X, Y)
        self.mean_ = Y.mean(axis=0).astype(np.float32)
        return self

    def predict(self, X):
        X = self._validate_X(X, reset=False)
        return np.repeat((self.scale * self.mean_)[None], len(X), axis=0)


def _half_mean_factory(seed, dataset_name, n_train, *, fast=False, **options):
    return _HalfMeanDecoder(random_state=seed, **options)


@pytest.fixture
def half_mean():
    spec = register_method("half-mean", _half_mean_factory, estimator=_HalfMeanDecoder, in_all=False,
                           ranges={"scale": (0, 1)}, description="half the mean training image (test)")
    yield spec
    unregister_method("half-mean")


def test_a_method_defined_in_a_test_file_is_listed_checked_and_benchmarked(half_mean, tmp_path):
    assert [o.name for o in half_mean.options] == ["scale"] and half_mean.options[0].kinds == ("float",)
    assert half_mean.options[0].help == "Factor applied to the mean image."
    with pytest.raises(ConfigError, match="scale=2 is above its maximum 1"):
        check_options("half-mean", {"scale": 2})
    rows = json.loads(CliRunner().invoke(cli, ["methods", "list", "--json"]).output)
    assert any(r["name"] == "half-mean" and r["options"][0]["name"] == "scale" for r in rows)
    path = _leaky_file(tmp_path / "user.npz")
    res = run_benchmark(BenchmarkConfig(str(path), "half-mean,mean-image", splits="official", seeds=1,
                                        out=str(tmp_path / "b"), method_options={"half-mean": {"scale": 0.25}},
                                        reference="mean-image"), progress=False, report=False)
    assert res["computed"] == 2
    # train saves it, evaluate and reconstruct load it through the registry's checkpoint kinds
    run = CliRunner().invoke(cli, ["train", "--dataset", str(path), "--method", "half-mean", "--set", "scale=0.25",
                                   "--out", str(tmp_path / "t")])
    assert run.exit_code == 0, run.output
    ev = CliRunner().invoke(cli, ["evaluate", "--checkpoint", str(tmp_path / "t"), "--dataset", str(path)])
    assert ev.exit_code == 0, ev.output
    from cortexflow.models.loader import load_decoder

    model = load_decoder(tmp_path / "t" / "checkpoint")
    assert type(model) is _HalfMeanDecoder and model.scale == 0.25


# ---------------------------------------------------------------- registration errors
def test_registry_rejects_bad_names_needs_and_duplicates():
    for bad in ["", "a,b", "all", None]:
        with pytest.raises(ConfigError):
            register_method(bad, _half_mean_factory)
    with pytest.raises(ConfigError, match="already registered"):
        register_method("ridge", _half_mean_factory)
    with pytest.raises(ConfigError, match="unknown needs"):
        register_method("x-method", _half_mean_factory, needs=("telepathy",))
    with pytest.raises(ConfigError, match="not one of its options"):
        register_method("x-method", _half_mean_factory, estimator=_HalfMeanDecoder, ranges={"nope": (0, 1)})
    assert "x-method" not in METHODS


def test_a_failing_module_or_plugin_raises_with_the_method_names(monkeypatch, tmp_path):
    saved = dict(METHODS)
    monkeypatch.setattr(registry, "_LOADED", False)
    monkeypatch.setitem(registry.BUILTIN_MODULES, "no_such_module_for_cortexflow", ("ghost-method",))
    try:
        with pytest.raises(ConfigError, match="registering method\\(s\\) ghost-method failed"):
            registry.load_methods()
    finally:
        registry.BUILTIN_MODULES.pop("no_such_module_for_cortexflow")
    # a broken third-party plugin is an error too, naming it; a working one registers
    (tmp_path / "my_cf_plugin.py").write_text(
        "from cortexflow.methods import register_method\n"
        "def register():\n"
        "    register_method('my-plugin-method', lambda seed, d, n, fast=False: None, in_all=False)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    eps = [importlib.metadata.EntryPoint("mine", "my_cf_plugin:register", "cortexflow.methods")]
    monkeypatch.setattr(registry, "entry_points", lambda group=None: eps)
    monkeypatch.setattr(registry, "_LOADED", False)
    try:
        registry.load_methods()
        assert "my-plugin-method" in METHODS
        eps.append(importlib.metadata.EntryPoint("broken", "no_such_module_xyz:register", "cortexflow.methods"))
        METHODS.pop("my-plugin-method")
        sys.modules.pop("my_cf_plugin", None)
        monkeypatch.setattr(registry, "_LOADED", False)
        with pytest.raises(ConfigError, match="method plugin 'broken'"):
            registry.load_methods()
    finally:
        METHODS.clear()
        METHODS.update(saved)
        registry._LOADED = True


# ---------------------------------------------------------------- the contract over every registered method
#: test-data settings a method needs on the 20-row problem (not fitting settings: those are the fast ones)
_CONTRACT_OPTIONS = {"cccv1-semantic": {"encoder": "pixels"}}


@pytest.fixture(scope="module")
def contract_prior(tmp_path_factory):
    from cortexflow.priors import PriorConfig, get_prior

    prior = get_prior("miyawaki-patterns", config=PriorConfig(embed_dim=8, widths=(4, 8, 8), epochs=1, batch_size=32,
                                                              max_images=120),
                      cache_dir=tmp_path_factory.mktemp("contract-prior"))
    prior.corpus_images = load_corpus("miyawaki-patterns").images[:200]
    return prior


@pytest.mark.parametrize("name", list_methods())
def test_every_registered_method_fits_saves_loads_and_predicts_the_same(name, contract_prior, tmp_path):
    from cortexflow.models.loader import load_decoder

    spec = get_method(name)
    rng = np.random.default_rng(0)
    Y, _ = miyawaki_patterns(n_random=26, n_shapes=0, seed=5)
    p = 200 if "eeg" in spec.needs else 30  # EEG rows: 2 channels x 100 samples (the front-ends pool over time)
    X = (Y.reshape(26, -1) @ rng.normal(size=(784, p)) + 0.1 * rng.normal(size=(26, p))).astype(np.float32)
    opts = dict(_CONTRACT_OPTIONS.get(name, {}))
    if "eeg" in spec.needs:
        opts.update(n_channels=2)
    if "prior" in spec.needs:
        opts["prior_config"] = {"embed_dim": 8, "widths": [4, 8, 8], "epochs": 1, "max_images": 120}
    est = make_estimator(name, 0, "synthetic", 20, fast=True, stimuli=Y, resolve=False, **opts)
    if "prior" in spec.needs:
        est.set_params(prior=contract_prior)
    if "device" in est.get_params(deep=False):
        est.set_params(device="cpu")
    assert isinstance(est, spec.estimator)
    P = est.fit(X[:20], Y[:20]).predict(X[20:])
    assert P.shape == (6, 28, 28) and P.dtype == np.float32 and np.isfinite(P).all(), name
    est.save(tmp_path / "ckpt")
    loaded = load_decoder(tmp_path / "ckpt", device="cpu")
    assert type(loaded) is spec.estimator and loaded.checkpoint_kind == spec.checkpoint_kind
    assert np.abs(loaded.predict(X[20:]) - P).max() == 0, name


@pytest.mark.parametrize("name", list_methods())
def test_every_registered_method_accepts_any_sklearn_random_state(name, contract_prior):
    spec = get_method(name)
    rng = np.random.default_rng(1)
    Y, _ = miyawaki_patterns(n_random=20, n_shapes=0, seed=6)
    p = 200 if "eeg" in spec.needs else 30
    X = (Y.reshape(20, -1) @ rng.normal(size=(784, p))).astype(np.float32)
    opts = dict(_CONTRACT_OPTIONS.get(name, {}))
    if "eeg" in spec.needs:
        opts.update(n_channels=2)
    est = make_estimator(name, 0, "synthetic", 20, fast=True, stimuli=Y, resolve=False, **opts)
    extra = {"prior": contract_prior} if "prior" in spec.needs else {}
    if "device" in est.get_params(deep=False):
        extra["device"] = "cpu"
    for random_state in (None, np.random.RandomState(3)):
        est.set_params(random_state=random_state, **extra)
        assert np.isfinite(est.fit(X, Y).predict(X[:2])).all(), (name, random_state)


def test_train_defaults_to_the_best_method_on_new_images():
    from cortexflow.cli.main import DEFAULT_TRAIN_METHOD

    assert DEFAULT_TRAIN_METHOD == "ridge-prior" and get_method(DEFAULT_TRAIN_METHOD).checkpoint_kind
    r = CliRunner().invoke(cli, ["train", "--help"])
    assert "(ridge-prior by default)" in " ".join(r.output.split()) and "ridge-prior" in r.output
    bad = CliRunner().invoke(cli, ["train", "--dataset", "x.npz", "--config", "small"])
    assert bad.exit_code == 2 and "--config applies to --method cccv1" in bad.output


@pytest.mark.parametrize("method, old", [("cccv1-prior", "finetune_decoder"), ("cccv1-prior", "finetune_lr_factor"),
                                         ("mindvis-lite", "finetune_epochs"), ("mindvis-prior", "finetune_epochs")])
def test_the_old_finetune_spelling_is_an_unknown_option(tmp_path, method, old):
    """One spelling, ``fine_tune_*``: ``--set METHOD:finetune_*=...`` stops with the registry's usual error."""
    new = "fine_tune_" + old[len("finetune_"):]
    r = CliRunner().invoke(cli, ["benchmark", "--datasets", "miyawaki", "--methods", method, "--fast",
                                 "--set", f"{method}:{old}=1", "--out", str(tmp_path / "b")])
    assert r.exit_code == 2, r.output
    assert f"has no option '{old}' (did you mean {new}?); its options: " in r.output, r.output
    assert not (tmp_path / "b").exists()


# ---------------------------------------------------------------- option help
def test_every_option_has_its_own_one_line_help():
    """No option shares its help with another option of its method (a grouped numpydoc entry), none is empty."""
    for name in list_methods():
        helps = {o.name: o.help for o in get_method(name).options}
        for opt, text in helps.items():
            assert text and "\n" not in text, (name, opt)
        by_text: dict[str, list[str]] = {}
        for opt, text in helps.items():
            by_text.setdefault(text, []).append(opt)
        assert not {t: o for t, o in by_text.items() if len(o) > 1}, name


def test_field_help_names_real_fields_of_grouped_entries():
    """Every FIELD_HELP entry is a field its class documents in a grouped entry (a stale one would hide nothing)."""
    import dataclasses
    import inspect

    from cortexflow.baselines.brain_diffuser_lite import BrainDiffuserLite
    from cortexflow.registry.options import FIELD_HELP, _docstring_entries
    from cortexflow.training.config import CCCV1Config, TrainingConfig

    classes = {c.__name__: c for c in (TrainingConfig, CCCV1Config, BrainDiffuserLite)}
    assert set(FIELD_HELP) == set(classes)
    for cname, fields in FIELD_HELP.items():
        cls = classes[cname]
        names = ({f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls)
                 else set(inspect.signature(cls.__init__).parameters))
        entries = {**_docstring_entries(cls, "Attributes"), **_docstring_entries(cls, "Parameters")}
        for field_name in fields:
            assert field_name in names and entries[field_name].shared, (cname, field_name)


def test_option_help_prefers_an_own_entry_then_the_mapping_then_a_base_class():
    from cortexflow.registry.options import option_help

    class Base:
        """Base.

        Parameters
        ----------
        a : int
            The base's a.
        c : int
            The base's c.
        """

    class Child(Base):
        """Child.

        Parameters
        ----------
        a, b : int
            Both a and b.
        c : int
            As for :class:`Base`.
        d : int
            The child's d. More text.
        """

    assert option_help(Child) == {"a": "The base's a.", "b": "Both a and b.", "c": "The base's c.",
                                  "d": "The child's d."}


def test_variant_defaults_are_shown_and_used_but_user_settings_win():
    """A variant's ``defaults`` (ridge-prior-stacked: pixel_blend='auto') are its options' defaults and reach the estimator."""
    from cortexflow.methods.build import make_estimator
    from cortexflow.registry.methods import get_method

    spec = get_method("ridge-prior-stacked")
    assert {o.name: o.default for o in spec.options}["pixel_blend"] == "auto"
    assert {o.name: o.default for o in get_method("ridge-prior").options}["pixel_blend"] == 0.0
    stim = np.zeros((4, 28, 28), np.float32)
    est = make_estimator("ridge-prior-stacked", 0, "user", 20, stimuli=stim, resolve=False)
    assert est.pixel_blend == "auto"
    est = make_estimator("ridge-prior-stacked", 0, "user", 20, stimuli=stim, resolve=False, pixel_blend=0.5)
    assert est.pixel_blend == 0.5
    assert make_estimator("cccv1-prior-ensemble", 0, "user", 20, stimuli=stim, resolve=False).n_members == 5
    with pytest.raises(ConfigError, match="not one of its options"):
        register_method("bad-defaults", lambda seed, d, n, fast=False: None, options=(), defaults={"nope": 1})
