"""``cccv1-prior``: the CCCV1 brain encoder trained into an image prior's embedding space.

An image prior (:mod:`cortexflow.priors`) learns, from many external images of
the same kind as the stimuli, an encoder from an image to a unit-norm
embedding and a decoder from the embedding back to the image. This estimator
trains a brain encoder into that embedding space:

* the encoder is CCCV1's (:class:`~cortexflow.models.cccv1.CLIPGuidedEncoder`,
  an MLP with progressive dropout, followed by the
  :class:`~cortexflow.models.cccv1.SemanticEnhancer`), or with
  ``encoder="attention"`` a small self-attention encoder over groups of
  voxels (:class:`VoxelGroupAttentionEncoder`);
* by default (``ridge_skip=True``) a fixed linear read-out, the ridge
  regression from the signals to the prior's embeddings (penalty by inner
  leave-one-out on the training rows), is added to the encoder's output
  (:class:`LinearSkipEncoder`): the deep encoder learns a residual on top of
  ridge-to-prior. Without it, the encoder alone (77 training rows in an inner
  5-fold CV of vangerven's training rows) was clearly worse than ridge-to-prior
  (MSE 0.0517 vs 0.0436); with it, it is on par (0.0434);
* its loss is the pixel MSE of the image that the prior's decoder (frozen)
  makes from the brain embedding, plus ``1 - cosine`` and the symmetric
  InfoNCE (:func:`cortexflow.semantic.losses.clip_infonce`) between the brain
  embedding and the prior's embedding of the training stimulus: images and
  brain signals share one embedding space learned from many images;
* optionally (``fine_tune_decoder=True``) a second phase trains encoder and
  decoder together with a learning rate ``fine_tune_lr_factor`` times smaller;
* preprocessing (z-scored signals), the inner validation split and early
  stopping use the training rows only (:func:`cortexflow.training.train_model`,
  which draws the split with :func:`cortexflow.data.splits.inner_validation_split`);
* ``n_members > 1`` trains that many members with different seeds and
  predicts the mean of their images. With the MLP encoder and a frozen
  decoder the members train together in one loop
  (:mod:`cortexflow.training.prior_members`, the batched trainer of
  :mod:`cortexflow.training.batched`); each equals the member trained alone
  up to floating-point summation order. Otherwise (``encoder="attention"``,
  ``fine_tune_decoder=True``, or ``batched=False``) they train one after another.

Every random choice comes from the estimator's own :class:`torch.Generator`
(weights, dropout masks) and from ``train_model``'s seeded generator (inner
split, batch order): ``fit`` never touches torch's global random state.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.utils.validation import check_is_fitted
from torch import nn

from cortexflow.baselines._common import fit_ridge_cv
from cortexflow.data.preprocessing import ImageScaler, SignalScaler
from cortexflow.exceptions import CheckpointError, ConfigError, DataValidationError
from cortexflow.models.cccv1 import CLIPGuidedEncoder, SemanticEnhancer, StreamDropout
from cortexflow.models.ensemble import check_config_options, member_seeds
from cortexflow.models.estimator import CCCV1Decoder
from cortexflow.semantic.losses import LearnableTemperature, clip_infonce
from cortexflow.training.prior_members import train_prior_members
from cortexflow.data.guard import DEFAULT_THRESHOLD
from cortexflow.priors.backed import PriorBacked
from cortexflow.priors.persistence import StatePacker, StateUnpacker, load_decoder_state, save_decoder_state
from cortexflow.priors.ridge_prior import (
    RidgePriorDecoder,
    DECODINGS,
    FAST_PRIOR_CONFIG,
    check_decoding,
    prior_report_info,
)
from cortexflow.training.prior import FittedPrior
from cortexflow.training.batched import BatchedNotSupported
from cortexflow.training.config import CCCV1Config, get_config
from cortexflow.training.trainer import train_model
from cortexflow.training.devices import resolve_device
from cortexflow.training.seeding import seeded_generator
from cortexflow.registry.options import options_from_dataclass, options_from_estimator
from cortexflow.registry.methods import register_method
from cortexflow.registry.sklearn_notes import TRANSFORMER_CHECKS, images_only

__all__ = [
    "CCCV1PriorDecoder",
    "PriorBrainNet",
    "PriorEnsemble",
    "VoxelGroupAttentionEncoder",
    "GeneratorDropout",
    "EmbeddingAlignment",
    "ENCODERS",
    "DEFAULT_LOSS_WEIGHTS",
    "PriorDecoder",
    "prior_decoder",
]

logger = logging.getLogger(__name__)

ENCODERS = ("mlp", "attention")
#: Weights of the two alignment terms beside the pixel MSE. Inner 5-fold CV of vangerven's training rows
#: (a prototype prior, no ridge read-out) found no better setting among cosine 5, InfoNCE 1 and pixel loss only.
DEFAULT_LOSS_WEIGHTS = {"prior_cosine": 1.0, "prior_infonce": 0.1}


# ------------------------------------------------------------------ random streams
class GeneratorDropout(StreamDropout):
    """:class:`StreamDropout` whose masks come from an explicit ``torch.Generator``.

    ``generator`` is not a parameter or buffer: it is set by the estimator
    before training and cleared afterwards (dropout is off in eval mode).
    """

    _warned = False  # the device-mismatch warning is logged once per process

    def __init__(self, p: float, generator: torch.Generator | None = None):
        super().__init__(p)
        self.generator = generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        # a generator on another device than the input cannot draw its mask: use the global stream then
        gen = self.generator if self.generator is not None and self.generator.device == x.device else None
        if gen is None and self.generator is not None and not GeneratorDropout._warned:
            GeneratorDropout._warned = True
            logger.warning("dropout generator on %s but input on %s: masks come from torch's global random stream",
                           self.generator.device, x.device)
        noise = torch.empty_like(x).bernoulli_(1.0 - self.p, generator=gen)
        return x * noise.div_(1.0 - self.p)


def _use_generator_dropout(module: nn.Module) -> nn.Module:
    """Replace every ``nn.Dropout`` inside ``module`` by a :class:`GeneratorDropout` of the same rate."""
    for name, child in module.named_children():
        if isinstance(child, nn.Dropout) and not isinstance(child, GeneratorDropout):
            setattr(module, name, GeneratorDropout(child.p))
        else:
            _use_generator_dropout(child)
    return module


def _set_dropout_generator(module: nn.Module, gen: torch.Generator | None) -> None:
    for m in module.modules():
        if isinstance(m, GeneratorDropout):
            m.generator = gen


@torch.no_grad()
def _init_weights(module: nn.Module, gen: torch.Generator) -> None:
    """Re-draw the random initial weights of ``module`` from ``gen`` (PyTorch's default schemes).

    ``nn.Linear``: weight and bias uniform in +-1/sqrt(fan_in) (what
    ``reset_parameters`` draws); ``nn.MultiheadAttention``: Xavier-uniform
    input projection; parameters named ``pos``: normal with sd 0.02.
    LayerNorm and zero biases are deterministic already.
    """
    for m in module.modules():
        if isinstance(m, nn.Linear):
            bound = 1.0 / math.sqrt(m.in_features) if m.in_features > 0 else 0.0
            m.weight.uniform_(-bound, bound, generator=gen)
            if m.bias is not None:
                m.bias.uniform_(-bound, bound, generator=gen)
        elif isinstance(m, nn.MultiheadAttention) and m.in_proj_weight is not None:
            nn.init.xavier_uniform_(m.in_proj_weight, generator=gen)
        pos = getattr(m, "pos", None)
        if isinstance(pos, nn.Parameter):
            pos.normal_(0.0, 0.02, generator=gen)


# ---------------------------------------------------------------------- encoders
class VoxelGroupAttentionEncoder(nn.Module):
    """Self-attention over groups of voxels, pooled into a unit-norm embedding.

    The signal vector (``input_dim`` features) is cut into ``n_tokens``
    contiguous groups (zero-padded at the end); each group is projected to a
    ``token_dim`` token with a learned position embedding; ``depth``
    pre-norm transformer blocks (multi-head self-attention and an MLP, both
    residual) mix the tokens; the tokens are mean-pooled and projected to the
    embedding, followed by LayerNorm, Tanh and L2 normalisation like CCCV1's
    encoder.
    """

    def __init__(self, input_dim: int, embed_dim: int = 512, n_tokens: int = 32, token_dim: int = 64,
                 depth: int = 1, heads: int = 4, dropout: float = 0.1):
        super().__init__()
        if n_tokens < 1 or token_dim < 1 or depth < 1 or heads < 1 or token_dim % heads:
            raise ConfigError(f"attention encoder: n_tokens={n_tokens}, token_dim={token_dim}, depth={depth} and "
                              f"heads={heads} must be >= 1 with token_dim divisible by heads")
        self.input_dim, self.n_tokens = int(input_dim), int(n_tokens)
        self.group = math.ceil(self.input_dim / self.n_tokens)
        self.embed = nn.Linear(self.group, token_dim)
        self.pos = nn.Parameter(torch.zeros(1, self.n_tokens, token_dim))
        self.drop_in = GeneratorDropout(dropout)
        self.norms1 = nn.ModuleList(nn.LayerNorm(token_dim) for _ in range(depth))
        self.attn = nn.ModuleList(nn.MultiheadAttention(token_dim, heads, batch_first=True) for _ in range(depth))
        self.norms2 = nn.ModuleList(nn.LayerNorm(token_dim) for _ in range(depth))
        self.mlps = nn.ModuleList(
            nn.Sequential(nn.Linear(token_dim, 2 * token_dim), nn.SiLU(), GeneratorDropout(dropout),
                          nn.Linear(2 * token_dim, token_dim))
            for _ in range(depth)
        )
        self.head = nn.Sequential(nn.LayerNorm(token_dim), nn.Linear(token_dim, embed_dim), nn.LayerNorm(embed_dim),
                                  nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = self.n_tokens * self.group - x.shape[1]
        if pad:
            x = F.pad(x, (0, pad))
        h = self.drop_in(self.embed(x.reshape(len(x), self.n_tokens, self.group)) + self.pos)
        for n1, attn, n2, mlp in zip(self.norms1, self.attn, self.norms2, self.mlps):
            a = n1(h)
            h = h + attn(a, a, a, need_weights=False)[0]
            h = h + mlp(n2(h))
        return F.normalize(self.head(h.mean(dim=1)), dim=-1)


def build_brain_encoder(kind: str, input_dim: int, embed_dim: int, config: CCCV1Config) -> nn.Module:
    """The brain encoder of ``kind`` (one of :data:`ENCODERS`), followed by CCCV1's semantic enhancer."""
    if kind == "mlp":
        enc = CLIPGuidedEncoder(input_dim, config.dropout_encoder, config.hidden_dim, embed_dim)
    elif kind == "attention":
        enc = VoxelGroupAttentionEncoder(input_dim, embed_dim, dropout=max(config.dropout_encoder, 0.1))
    else:
        raise ConfigError(f"unknown encoder {kind!r}; allowed: {', '.join(ENCODERS)}")
    return _use_generator_dropout(nn.Sequential(enc, SemanticEnhancer(embed_dim, embed_dim // 2, config.alpha)))


# ------------------------------------------------------------------------ networks
class LinearSkipEncoder(nn.Module):
    """``normalize(linear(x) + gate * deep(x))``: a fixed linear read-out plus a learned deep residual.

    ``linear`` is the ridge regression from the signals to the prior's
    embeddings of the training stimuli (penalty by inner leave-one-out on the
    training rows), kept fixed: training starts from ridge-to-prior and the
    deep encoder learns, under the pixel and alignment losses, what the
    linear read-out misses. ``gate`` (learned, initialised at ``gate_init``)
    scales the deep encoder's unit-norm output.
    """

    def __init__(self, linear: nn.Linear, deep: nn.Module, gate_init: float = 0.1):
        super().__init__()
        self.linear = linear
        self.linear.requires_grad_(False)
        self.deep = deep
        self.gate = nn.Parameter(torch.tensor(float(gate_init)))

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        """The embedding before normalisation (the scale in which the ridge residuals live)."""
        return self.linear(x) + self.gate * self.deep(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.raw(x), dim=-1)


class PriorBrainNet(nn.Module):
    """A brain encoder into a prior's embedding space and the prior's decoder.

    ``encode(x)`` gives the unit-norm brain embedding, ``decode(e)`` the flat
    image ``(B, n_pixels)`` that the prior's decoder makes from it (the
    interface :func:`cortexflow.training.train_model` expects).
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, e: torch.Tensor) -> torch.Tensor:
        return self.decoder(e).reshape(len(e), -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


class PriorEnsemble(nn.Module):
    """Members of :class:`PriorBrainNet`; images are averaged, embeddings averaged and re-normalised."""

    def __init__(self, members: list[PriorBrainNet]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(torch.stack([m.encode(x) for m in self.members]).mean(0), dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.members]).mean(0)


class EmbeddingAlignment(nn.Module):
    """Targets of the alignment terms: the prior's unit-norm embeddings of the training stimuli.

    :meth:`terms` returns the loss terms ``prior_cosine`` (``1 - cos`` between
    brain embedding and target) and ``prior_infonce`` (symmetric InfoNCE
    with a learnable temperature) for :func:`~cortexflow.training.train_model`;
    they read the batch rows through its ``index`` key.
    """

    def __init__(self, targets: np.ndarray):
        super().__init__()
        self.register_buffer("targets", F.normalize(torch.as_tensor(np.asarray(targets, dtype=np.float32)), dim=-1))
        self.temperature = LearnableTemperature()

    def cosine(self, out: dict) -> torch.Tensor:
        return (1.0 - (F.normalize(out["embedding"], dim=-1) * self.targets[out["index"]]).sum(-1)).mean()

    def infonce(self, out: dict) -> torch.Tensor:
        return clip_infonce(out["embedding"], self.targets[out["index"]], self.temperature())

    def terms(self) -> dict[str, Any]:
        return {"prior_cosine": self.cosine, "prior_infonce": _InfoNCETerm(self)}


class _InfoNCETerm(nn.Module):
    """The ``prior_infonce`` term as a module, so that its temperature is trained."""

    def __init__(self, alignment: EmbeddingAlignment):
        super().__init__()
        self.alignment = alignment

    def forward(self, out: dict) -> torch.Tensor:
        return self.alignment.infonce(out)


# ----------------------------------------------------------------------- estimator
class CCCV1PriorDecoder(PriorBacked, CCCV1Decoder,
                        dataset_role=' and the training preset of ``config="auto"``'):
    """CCCV1's encoder trained into an image prior's embedding space; images come from the prior's decoder.

    Parameters
    ----------
    {prior_parameters}
    config : "auto", str, dict or CCCV1Config
        Training settings as for :class:`CCCV1Decoder` (``"auto"``: the data
        set's preset); ``loss_weights`` default to :data:`DEFAULT_LOSS_WEIGHTS`.
    encoder : {"mlp", "attention"}
        Brain encoder (see the module docstring).
    n_members : int
        Ensemble size; members differ in seed and their images are averaged.
    ridge_skip : bool
        Add a fixed linear read-out, the ridge from signals to the prior's
        embeddings (penalty by inner leave-one-out CV on the training rows), to
        the deep encoder's output (:class:`LinearSkipEncoder`).
    gate_init : float
        Initial weight of the deep encoder's output beside the linear read-out.
    residual_scale : float or "auto"
        Posterior-mean decoding, as ``ridge-prior`` does it
        (:class:`~cortexflow.priors.ridge_prior.RidgePriorDecoder`): each
        prediction is decoded at ``z + c * r_j`` for the out-of-fold ridge
        residuals ``r_j`` of the training rows and the images are averaged;
        ``"auto"`` chooses ``c`` on the training rows' out-of-fold ridge
        predictions; 0 decodes the point estimate. Needs ``ridge_skip``.
    decoding : {"hybrid", "prior", "corpus-knn"}
        How an embedding becomes an image, as in ``ridge-prior`` (default ``"hybrid"``).
        ``"hybrid"`` is the mean of the posterior-mean image and the mean of
        the ``knn`` nearest corpus images (see
        :class:`~cortexflow.priors.ridge_prior.RidgePriorDecoder`).
        ``decoding``, ``knn`` and ``pixel_blend`` need ``ridge_skip`` (without
        it the network's own decoder draws the image, with a logged warning
        when these options ask for more).
    knn : int
        Nearest corpus images averaged by ``"corpus-knn"`` and ``"hybrid"``.
    pixel_blend : float or "auto"
        Weight of a pixel ridge image averaged with the prior's image (0 off; ``"auto"`` chosen).
        The residual scale and this weight are chosen on the ridge
        read-out's out-of-fold images of the training rows (the network is
        not refitted per inner fold).
    fine_tune_decoder : bool
        Add a second phase that also trains the prior's decoder.
    fine_tune_lr_factor : float
        Learning rate of that phase relative to ``config.lr``.
    random_state : int
        Seed of weights, dropout, the inner split and batch order.
    device, progress, amp :
        As for :class:`CCCV1Decoder`.
    batched : {"auto", True, False}
        How ``n_members > 1`` members train: ``"auto"`` together in one loop
        by the batched trainer where supported (MLP encoder, frozen decoder),
        else one after another with the reason logged; ``True`` batched or a
        :class:`~cortexflow.training.batched.BatchedNotSupported` error naming
        the option that prevents it; ``False`` one after another. A batched
        member equals the sequentially trained member of its seed (same inner
        split, batch order, dropout masks, early stopping) up to
        floating-point summation order. A single member always trains alone.

    Attributes
    ----------
    model_ : PriorEnsemble
    prior_ : fitted prior
    config_ : CCCV1Config
    signal_scaler_ : SignalScaler
    target_scaler_ : ImageScaler
        Identity on [0, 1] (the prior's images are already in [0, 1]).
    histories_ : list of list of dict
        Per member (and phase), the per-epoch losses.
    report_info_ : dict
        Prior corpus, corpus images dropped as near-duplicates, and the like.
    fit_seconds_ : float
    """

    def __init__(
        self,
        prior: Any = None,
        dataset: str | None = None,
        config: Any = "auto",
        encoder: str = "mlp",
        n_members: int = 1,
        ridge_skip: bool = True,
        gate_init: float = 0.1,
        residual_scale: Any = "auto",
        decoding: str = "hybrid",
        knn: int = 10,
        pixel_blend: Any = 0.0,
        fine_tune_decoder: bool = False,
        fine_tune_lr_factor: float = 0.1,
        prior_config: Any = None,
        stimuli: Any = None,
        threshold: float = DEFAULT_THRESHOLD,
        data_dir: Any = None,
        cache_dir: Any = None,
        random_state: int = 0,
        device: str = "auto",
        progress: bool = False,
        amp: str = "off",
        batched: Any = "auto",
    ):
        self._set_prior_params(prior=prior, dataset=dataset, stimuli=stimuli, prior_config=prior_config,
                               threshold=threshold, data_dir=data_dir, cache_dir=cache_dir)
        self.config = config
        self.encoder = encoder
        self.n_members = n_members
        self.ridge_skip = ridge_skip
        self.gate_init = gate_init
        self.residual_scale = residual_scale
        self.decoding = decoding
        self.knn = knn
        self.pixel_blend = pixel_blend
        self.fine_tune_decoder = fine_tune_decoder
        self.fine_tune_lr_factor = fine_tune_lr_factor
        self.random_state = random_state
        self.device = device
        self.progress = progress
        self.amp = amp
        self.batched = batched

    # ------------------------------------------------------------------ fit
    def _check_params(self) -> None:
        self._check_prior_params()
        check_decoding(self.decoding, self.knn, self.pixel_blend)
        if self.encoder not in ENCODERS:
            raise ConfigError(f"encoder={self.encoder!r} is not one of {', '.join(ENCODERS)}")
        if not 0 < float(self.fine_tune_lr_factor) <= 1:
            raise ConfigError(f"fine_tune_lr_factor={self.fine_tune_lr_factor!r} must lie in (0, 1]")
        self._seed()  # any scikit-learn random_state (None, an int, a RandomState); a clear error otherwise
        if not (isinstance(self.batched, (bool, np.bool_)) or (isinstance(self.batched, str) and self.batched == "auto")):
            raise ConfigError(f"batched={self.batched!r} is not one of 'auto', True, False")

    def _batched_blocker(self) -> str | None:
        """Why the members cannot train together (None when they can)."""
        if self.encoder != "mlp":
            return f"encoder={self.encoder!r} has no batched path (only 'mlp')"
        if self.fine_tune_decoder:
            return "fine_tune_decoder=True trains a decoder per member, which the batched trainer does not stack"
        return None

    def _use_batched(self, n_members: int) -> bool:
        """Whether ``fit`` trains its members together (see the ``batched`` parameter)."""
        forced = not isinstance(self.batched, str)  # True or False
        if n_members < 2 or (forced and not self.batched):
            return False
        blocker = self._batched_blocker()
        if blocker is None:
            return True
        if forced:
            raise BatchedNotSupported(f"batched=True: {blocker}; use batched='auto' or False")
        logger.info("cccv1-prior: %d members train one after another: %s", n_members, blocker)
        return False

    def fit(self, X, Y, *, metadata: dict | None = None) -> "CCCV1PriorDecoder":
        """Train the brain encoder(s) into the prior's embedding space on the training rows (X, Y).

        Parameters
        ----------
        X : array-like, shape (n, n_features)
        Y : array-like, shape (n, H, W) or (n, H, W, 3)
            Training stimuli, values in [0, 1]; the prior is resolved at their shape.
        metadata : dict, optional
            Dataset metadata kept with the estimator.
        """
        self._check_params()
        seeds = member_seeds(self._seed(), self.n_members)
        X, Y = self._validate_fit_input(X, Y)
        Y = Y.astype(np.float32)
        if Y.min() < 0 or Y.max() > 1:
            raise DataValidationError(f"Y must hold images in [0, 1]; got values in [{Y.min():.3g}, {Y.max():.3g}]")
        t0 = time.perf_counter()
        self.output_shape_ = tuple(Y.shape[1:])
        self.prior_ = self._fitted_prior(Y.shape[1:])  # handed in by cortexflow.methods.build: no I/O here
        t_prior = time.perf_counter() - t0
        cfg = get_config(self.config, n_train=len(X), dataset=self.dataset)
        if not cfg.loss_weights:
            cfg = cfg.replace(loss_weights=dict(DEFAULT_LOSS_WEIGHTS))
        self.config_ = cfg
        self.signal_scaler_ = SignalScaler().fit(X)
        self.target_scaler_ = ImageScaler.from_state({"n_pixels_": int(np.prod(Y.shape[1:])), "data_min_": 0.0,
                                                      "data_max_": 1.0})
        Xs = self.signal_scaler_.transform(X)
        Yf = Y.reshape(len(Y), -1)
        targets = np.asarray(self.prior_.encode_images(Y), dtype=np.float32)
        embed_dim = targets.shape[1]
        decoder = prior_decoder(self.prior_)
        self.ridge_alpha_ = None
        linear = None
        self.posterior_ = None
        if not self.ridge_skip and (self.decoding != "prior" or self.pixel_blend != 0):
            logger.warning("ridge_skip=False: decoding=%r and pixel_blend=%r are not used; the network's own decoder "
                           "draws the image", self.decoding, self.pixel_blend)
        if self.ridge_skip:
            ridge = fit_ridge_cv(Xs.astype(np.float64), targets.astype(np.float64))
            self.ridge_alpha_ = float(ridge.alpha_)
            self.posterior_ = self._posterior_decoder(Xs, Y, targets, ridge)
            with torch.random.fork_rng(devices=[]):  # its random initial weights are overwritten
                linear = nn.Linear(Xs.shape[1], embed_dim)
            with torch.no_grad():
                linear.weight.copy_(torch.as_tensor(ridge.coef_, dtype=torch.float32))
                linear.bias.copy_(torch.as_tensor(ridge.intercept_, dtype=torch.float32))
        if self._use_batched(len(seeds)):
            members, self.histories_ = self._fit_members_batched(Xs, Yf, targets, embed_dim, decoder, cfg, seeds,
                                                                 linear)
        else:
            members, self.histories_ = [], []
            for seed in seeds:
                net, hist = self._fit_member(Xs, Yf, targets, embed_dim, decoder, cfg, seed, linear)
                members.append(net)
                self.histories_.append(hist)
        self.model_ = PriorEnsemble(members).eval()
        self.n_features_in_ = X.shape[1]
        self.history_ = self.histories_[0]
        self.metadata_ = dict(metadata or {})
        self.fit_seconds_ = time.perf_counter() - t0 - t_prior
        self.report_info_ = {**prior_report_info(self.prior_), "encoder": self.encoder, "n_members": int(self.n_members),
                             "fine_tune_decoder": bool(self.fine_tune_decoder),
                             "residual_scale": self.posterior_.residual_scale_ if self.posterior_ is not None else 0.0,
                             "decoding": self.decoding if self.posterior_ is not None else "network",
                             "pixel_blend": self.posterior_.pixel_blend_ if self.posterior_ is not None else 0.0,
                             "prior_seconds": round(t_prior, 3), "fit_seconds": round(self.fit_seconds_, 3)}
        return self

    def _posterior_decoder(self, Xs: np.ndarray, Y: np.ndarray, targets: np.ndarray, ridge) -> RidgePriorDecoder | None:
        """ridge-prior's decoding, set up from this fit's ridge read-out (None when it is the plain decode).

        The residuals are the out-of-fold ridge residuals of the training rows,
        the scale is chosen on their out-of-fold predictions and the corpus is
        guarded, exactly as :class:`RidgePriorDecoder` does (its own methods are used).
        """
        check_decoding(self.decoding, self.knn, self.pixel_blend)
        if self.residual_scale == 0 and self.decoding == "prior" and self.pixel_blend == 0:
            return None
        post = RidgePriorDecoder(residual_scale=self.residual_scale, decoding=self.decoding, knn=self.knn,
                                 pixel_blend=self.pixel_blend, threshold=self.threshold, random_state=self._seed(),
                                 data_dir=self.data_dir, progress=self.progress)
        post.prior_, post.ridge_, post.alpha_ = self.prior_, ridge, float(ridge.alpha_)
        post.corpus_ = self.prior_.info["corpus"]
        post._fit_decoding(Xs.astype(np.float64), targets.astype(np.float64), Y)
        plain = post.residual_scale_ == 0 and post.decoding == "prior" and not post.pixel_blend_
        return None if plain else post

    def kept_corpus_images(self) -> np.ndarray | None:
        """The guarded corpus images this fitted model draws neighbours from (None when its decoding uses none)."""
        post = getattr(self, "posterior_", None)
        return None if post is None else post.kept_corpus_images()

    def predict(self, X) -> np.ndarray:
        """Reconstructions (n, *image_shape) float32 in [0, 1]: the members' mean image, each decoded by ``decoding``."""
        check_is_fitted(self, "model_")
        if getattr(self, "posterior_", None) is None:
            return super().predict(X)
        X = self._validate_X(X, reset=False)
        Xs = self.signal_scaler_.transform(X)
        xt = torch.as_tensor(Xs)
        out = []
        for m in self.model_.members:
            with torch.no_grad():
                Z = m.encoder.raw(xt).numpy()
            out.append(self.posterior_._decode(Z, np.random.default_rng(self._seed())))
        return self.posterior_._blend(np.mean(out, axis=0).astype(np.float32), Xs.astype(np.float64))

    def _build_member(self, n_features: int, targets: np.ndarray, embed_dim: int, decoder: nn.Module,
                      cfg: CCCV1Config, seed: int, linear: nn.Linear | None):
        """One member's network (weights drawn from its seed), its alignment targets and its random stream."""
        gen = torch.Generator()
        gen.manual_seed(int(seed))
        with torch.random.fork_rng(devices=[]):  # construction draws throw-away weights from the global stream
            encoder = build_brain_encoder(self.encoder, n_features, embed_dim, cfg)
        _init_weights(encoder, gen)
        if linear is not None:
            encoder = LinearSkipEncoder(copy.deepcopy(linear), encoder, self.gate_init)
        dec = copy.deepcopy(decoder) if self.fine_tune_decoder else decoder
        dec.requires_grad_(False)
        return PriorBrainNet(encoder, dec), EmbeddingAlignment(targets), gen

    def _fit_members_batched(self, Xs, Yf, targets, embed_dim, decoder, cfg, seeds, linear):
        """Train the members together (:func:`~cortexflow.training.prior_members.train_prior_members`)."""
        built = [self._build_member(Xs.shape[1], targets, embed_dim, decoder, cfg, seed, linear) for seed in seeds]
        holders = [nn.ModuleDict({"net": net, "infonce": _InfoNCETerm(align)}) for net, align, _ in built]
        results = train_prior_members(holders, Xs, Yf, cfg, seeds, [gen for _, _, gen in built], device=self.device,
                                      amp=self.amp, progress=self.progress)
        return [net.cpu().eval() for net, _, _ in built], [list(res.history) for res in results]

    def _fit_member(self, Xs, Yf, targets, embed_dim, decoder, cfg, seed, linear):
        net, align, gen = self._build_member(Xs.shape[1], targets, embed_dim, decoder, cfg, seed, linear)
        dec = net.decoder
        dev = resolve_device(self.device)
        # CPU: the masks continue the initialisation stream; another device: that device's generator, seeded alike
        _set_dropout_generator(net, gen if dev.type == "cpu" else seeded_generator(seed, dev))
        try:
            res = train_model(net, Xs, Yf, cfg, seed=seed, device=self.device, progress=self.progress,
                              loss_terms=align.terms(), amp=self.amp)
            history = list(res.history)
            if self.fine_tune_decoder:
                dec.requires_grad_(True)
                res2 = train_model(net, Xs, Yf, cfg.replace(lr=cfg.lr * float(self.fine_tune_lr_factor)), seed=seed,
                                   device=self.device, progress=self.progress, loss_terms=align.terms(),
                                   amp=self.amp)
                dec.requires_grad_(False)
                history += [{**h, "phase": "finetune"} for h in res2.history]
        finally:
            _set_dropout_generator(net, None)
        return net.cpu().eval(), history

    # -------------------------------------------------------- persistence
    #: ``kind`` field of its checkpoints (see :func:`cortexflow.models.loader.load_decoder`).
    checkpoint_kind = "cccv1-prior"

    def save(self, path):
        """Write a self-contained checkpoint folder: the members' networks, the prior and the posterior-mean state.

        The prior's weights and config travel with it (no prior cache or corpus
        is needed to load it); a member's decoder that is still the prior's own
        (no ``fine_tune_decoder``) is not stored twice. See
        :mod:`cortexflow.priors.persistence`.
        """
        return save_decoder_state(self, path, kind=self.checkpoint_kind, fitted_attr="model_", skip=("model_",),
                                  extra=lambda packer: _pack_network(self, packer))

    @classmethod
    def load(cls, path, device: str = "auto") -> "CCCV1PriorDecoder":
        """Load a checkpoint written by :meth:`save` (no prior cache, corpus or network needed).

        Raises
        ------
        CheckpointError
            Missing or damaged files, a weights hash that differs, another kind
            of checkpoint, or weights that do not fit the stored configuration.
        """
        return load_decoder_state(cls, path, kind=cls.checkpoint_kind, device=device, classes=(RidgePriorDecoder,),
                                  network=_unpack_network)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        return tags


# ------------------------------------------------------------- prior adapters
class PriorDecoder(nn.Module):
    """The prior's decoder as a module from embeddings (B, d) to images (B, *image_shape).

    It stays in eval mode (its BatchNorm layers use the corpus statistics)
    even while the brain network around it trains.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def train(self, mode: bool = True) -> "PriorDecoder":
        super().train(False)
        return self

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return self.model.decode(e)


def prior_decoder(prior: FittedPrior) -> nn.Module:
    """A frozen copy of the prior's network, wrapped to decode embeddings into images."""
    model = copy.deepcopy(prior.model).cpu().eval()
    model.requires_grad_(False)
    return PriorDecoder(model)


# ------------------------------------------------------------ checkpoint helpers
_DECODER_PREFIX = "members.{}.decoder.model."


def _pack_network(est: CCCV1PriorDecoder, packer: StatePacker) -> dict[str, Any]:
    """Add ``est.model_``'s tensors (``model.*``) to ``packer``, each stored once.

    A member's decoder equal to the prior's own is left out (``decoder_from_prior``),
    and so is a tensor of member ``i > 0`` equal to member 0's (the fixed ridge
    read-out: ``same_as_member_0`` lists their names).
    """
    prior_state = est.prior_.model.state_dict()
    state = est.model_.state_dict()
    n = len(est.model_.members)
    from_prior = []
    for i in range(n):
        pre = _DECODER_PREFIX.format(i)
        keys = [k for k in state if k.startswith(pre)]
        from_prior.append(len(keys) == len(prior_state) and all(
            k[len(pre):] in prior_state and _same(state[k], prior_state[k[len(pre):]]) for k in keys))
    same_as_first: list[list[str]] = [[] for _ in range(n)]
    for k, v in state.items():
        if any(f and k.startswith(_DECODER_PREFIX.format(i)) for i, f in enumerate(from_prior)):
            continue
        member, _, rest = k[len("members."):].partition(".")
        first = f"members.0.{rest}"
        if k.startswith("members.") and member != "0" and not rest.startswith("decoder.") and first in state \
                and _same(v, state[first]):
            same_as_first[int(member)].append(rest)
            continue
        packer.add_tensor(f"model.{k}", v)
    return {"n_members": n, "decoder_from_prior": from_prior, "same_as_member_0": same_as_first,
            "prior": packer.add_prior(est.prior_)}


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and bool(torch.equal(a, b))


def _unpack_network(obj: CCCV1PriorDecoder, node: Any, unpacker: StateUnpacker) -> None:
    """Rebuild ``obj.model_`` from what :func:`_pack_network` stored (``obj``'s params and state are set)."""
    try:
        n, from_prior = int(node["n_members"]), [bool(f) for f in node["decoder_from_prior"]]
        prior = unpacker.priors[int(node["prior"])]
        if n < 1 or len(from_prior) != n:
            raise ValueError(f"n_members={n} with {len(from_prior)} decoder flags")
        cfg, n_in, d = obj.config_, int(obj.n_features_in_), prior.embed_dim
        with torch.random.fork_rng(devices=[]):  # construction draws throw-away weights; the global stream is kept
            decoder = prior_decoder(prior)
            members = []
            for shared in from_prior:
                enc = build_brain_encoder(obj.encoder, n_in, d, cfg)
                if obj.ridge_skip:
                    enc = LinearSkipEncoder(nn.Linear(n_in, d), enc, float(obj.gate_init))
                members.append(PriorBrainNet(enc, decoder if shared else copy.deepcopy(decoder)))
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, ConfigError) as exc:
        raise unpacker.error("network", f"does not describe the members' networks ({type(exc).__name__}: {exc})") from exc
    state = unpacker.take_prefix("model.")
    try:
        same = node.get("same_as_member_0") or [[] for _ in range(n)]
        for i, names in enumerate(same):
            state.update({f"members.{i}.{rest}": state[f"members.0.{rest}"] for rest in names if i > 0})
    except (KeyError, TypeError, AttributeError) as exc:
        raise unpacker.error("network.same_as_member_0", f"names a tensor member 0 does not have ({exc})") from exc
    for i, shared in enumerate(from_prior):
        if shared:
            state.update({_DECODER_PREFIX.format(i) + k: v for k, v in prior.model.state_dict().items()})
    model = PriorEnsemble(members)
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {unpacker.where}: the members' weights do not match the stored "
                              f"configuration ({exc})") from exc
    obj.model_ = model.eval()


# ---------------------------------------------------------------- registration
CCCV1_PRIOR_VERSION = "3"  # 2: posterior-mean decoding, 40 epochs / patience 8; 3: hybrid decoding
_OWN_PARAMS = ("prior", "encoder", "n_members", "ridge_skip", "gate_init", "residual_scale", "decoding", "knn",
               "pixel_blend", "fine_tune_decoder", "fine_tune_lr_factor", "prior_config", "threshold", "device", "amp",
               "batched")


def cccv1_prior_factory(seed: int, dataset_name: str, n_train: int, *, fast: bool = False, stimuli=None,
                        **options: Any) -> CCCV1PriorDecoder:
    """Unfitted :class:`CCCV1PriorDecoder` with the data set's training preset.

    ``options`` are the estimator's parameters (``prior``, ``encoder``,
    ``n_members``, ``ridge_skip``, ``fine_tune_decoder``, ...) and
    :class:`~cortexflow.training.CCCV1Config` fields (``lr``, ``dropout_encoder``,
    ``loss_weights``, ...), which override the preset.
    """
    est_opts = {k: options.pop(k) for k in list(options) if k in _OWN_PARAMS}
    # shorter schedule than cccv1's preset: on vangerven's training rows (inner 5-fold CV) 40 epochs with
    # patience 8 scored the same as the preset's 150 / 20 at a third of the time
    options = {"epochs": 40, "patience": 8, **options}
    cfg = get_config("auto", n_train=n_train, dataset=dataset_name, **options)
    if fast:
        cfg = cfg.replace(epochs=2, patience=1, hidden_dim=64)
        est_opts.setdefault("prior_config", dict(FAST_PRIOR_CONFIG))
    return CCCV1PriorDecoder(dataset=dataset_name, config=cfg, stimuli=stimuli, random_state=seed, **est_opts)


_CCCV1_PRIOR_OPTIONS = tuple(o for o in options_from_estimator(CCCV1PriorDecoder, choices={
    "decoding": DECODINGS, "encoder": tuple(ENCODERS)}, ranges={"knn": (1, None), "n_members": (1, None),
                                                                "threshold": (0, None)})
    if o.name in _OWN_PARAMS) + options_from_dataclass(CCCV1Config)
register_method(
    "cccv1-prior", cccv1_prior_factory, estimator=CCCV1PriorDecoder, version=CCCV1_PRIOR_VERSION,
    needs=("prior",), options=_CCCV1_PRIOR_OPTIONS, label="CCCV1-prior", check=check_config_options,
    sklearn_xfail=images_only("check_regressor_data_not_an_array", *TRANSFORMER_CHECKS),
    description="CCCV1 encoder trained into an image prior's embedding space (cosine + InfoNCE to the "
                "prior's embeddings, pixel MSE through the prior's frozen decoder), plus a fixed ridge "
                "read-out; option prior=CORPUS (default: the data set's), encoder=mlp|attention, n_members",
)
for _name, _opts, _what in (("cccv1-prior-ensemble", {"n_members": 5}, "5 members (seeds) trained together by "
                             "the batched trainer, mean image"),
                            ("cccv1-prior-attention", {"encoder": "attention"}, "self-attention encoder over 32 "
                             "groups of voxels instead of the MLP")):
    register_method(_name, cccv1_prior_factory, estimator=CCCV1PriorDecoder, version=CCCV1_PRIOR_VERSION, in_all=False,
                    defaults=_opts,
                    needs=("prior",), options=_CCCV1_PRIOR_OPTIONS, check=check_config_options,
                    description=f"cccv1-prior with {_what} (ablation)")
