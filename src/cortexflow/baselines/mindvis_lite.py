"""``mindvis-lite``: the structure of MinD-Vis at 28 x 28 scale.

MinD-Vis (Chen et al. 2023) pretrains a ViT masked autoencoder on patches of
the fMRI voxel vector (sparse-coded masked brain modelling, SC-MBM: large
embedding, about 75 % of the patches masked and reconstructed) on a large
corpus of unlabelled fMRI, then conditions a latent diffusion model on the
pretrained encoder (cross-attention and time-step conditioning, "double
conditioning") and fine-tunes encoder and diffusion model on the labelled
pairs. This lite version keeps that structure:

Pretraining
    The z-scored voxel vector is cut into patches of ``patch_size`` voxels;
    a small transformer masked autoencoder (embedding ``dim``, ``depth``
    encoder blocks, one decoder block) sees 25 % of the patches and
    reconstructs the masked 75 %. It is trained on the training signals and
    on any unlabelled signals given to ``fit``.
Fine-tuning
    An image decoder conditioned on the pretrained encoder: every token of
    the full, unmasked signal is mapped to a few values by a linear channel
    mapper, and an MLP decodes the concatenated map into pixels. Encoder and
    decoder are trained together on the labelled training rows.
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.utils.validation import check_is_fitted
from torch import nn

from cortexflow.baselines._common import train_network
from cortexflow.data.preprocessing import SignalScaler
from cortexflow.data.validation import validate_signals
from cortexflow.exceptions import ConfigError, DataValidationError
from cortexflow.models.base import COMMON_STATE, BaseDecoder, check_number
from cortexflow.models.checkpoint import StateField
from cortexflow.training.devices import resolve_device
from cortexflow.training.seeding import isolated_rng, seeded_generator, seeded_init
from cortexflow.registry.methods import register_method
from cortexflow.registry.sklearn_notes import images_only

__all__ = ["MindVisLite", "MaskedSignalModel", "ConditionedImageDecoder"]

logger = logging.getLogger(__name__)


def _block(dim: int, heads: int, dropout: float) -> nn.TransformerEncoderLayer:
    return nn.TransformerEncoderLayer(dim, heads, dim_feedforward=2 * dim, dropout=dropout,
                                      batch_first=True, norm_first=True, activation="gelu")


class MaskedSignalModel(nn.Module):
    """Masked autoencoder of a 1-D signal vector cut into patches.

    :meth:`reconstruct` masks ``mask_ratio`` of the patches at random (from
    ``generator`` while training, a fixed mask in eval mode), encodes the
    visible ones, reconstructs every patch and puts the true values back on
    the visible patches, so that the mean squared error of
    :meth:`compute_loss` counts the masked patches only.
    """

    def __init__(self, n_features: int, patch_size: int = 16, dim: int = 64, depth: int = 2, heads: int = 4,
                 mask_ratio: float = 0.75, dropout: float = 0.0):
        super().__init__()
        self.n_features, self.patch_size = int(n_features), int(patch_size)
        self.n_patches = math.ceil(self.n_features / self.patch_size)
        self.mask_ratio = float(mask_ratio)
        self.dim = dim
        self.patch_embed = nn.Linear(self.patch_size, dim)
        self.pos = nn.Parameter(torch.randn(1, self.n_patches, dim) * 0.02)
        self.encoder = nn.TransformerEncoder(_block(dim, heads, dropout), depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.dec_pos = nn.Parameter(torch.randn(1, self.n_patches, dim) * 0.02)
        self.decoder = nn.TransformerEncoder(_block(dim, heads, dropout), 1, enable_nested_tensor=False)
        self.head = nn.Linear(dim, self.patch_size)
        self.generator: torch.Generator | None = None

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        pad = self.n_patches * self.patch_size - x.shape[1]
        if pad:
            x = torch.nn.functional.pad(x, (0, pad))
        return x.reshape(len(x), self.n_patches, self.patch_size)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder tokens of the full, unmasked signal, shape (B, n_patches, dim)."""
        h = self.patch_embed(self.patchify(x)) + self.pos
        return self.norm(self.encoder(h))

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Mask, encode the visible patches, decode all; true values on the visible patches. Shape of ``x``."""
        patches = self.patchify(x)
        n, L = patches.shape[:2]
        n_keep = max(1, int(round(L * (1 - self.mask_ratio))))
        dev = x.device
        gen = self.generator if self.training else seeded_generator(0, dev)
        order = torch.rand(n, L, generator=gen, device=dev).argsort(dim=1)
        keep = order[:, :n_keep]
        mask = torch.ones(n, L, dtype=torch.bool, device=dev)
        mask.scatter_(1, keep, False)
        h = self.patch_embed(patches) + self.pos
        h = torch.gather(h, 1, keep[..., None].expand(-1, -1, self.dim))
        h = self.norm(self.encoder(h))
        full = self.mask_token.expand(n, L, self.dim).clone()
        full.scatter_(1, keep[..., None].expand(-1, -1, self.dim), h)
        recon = self.head(self.decoder(full + self.dec_pos))
        out = torch.where(mask[..., None], recon, patches)
        return out.reshape(n, -1)[:, : self.n_features]

    def compute_loss(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean squared error on the masked patches, as ``(loss, pixel loss)`` for :func:`~cortexflow.training.train_model`."""
        out = self.reconstruct(batch["x"])
        pix = F.mse_loss(out, batch["target"].reshape(out.shape))
        return pix, pix


class ConditionedImageDecoder(nn.Module):
    """Image decoder conditioned on every token of the pretrained encoder.

    A per-token linear "channel mapper" shrinks each token to ``map_dim``
    values (as MinD-Vis maps its encoder output before the diffusion model's
    cross-attention); the concatenated map goes through an MLP to the pixels
    (``n_pixels`` outputs, through a sigmoid unless ``sigmoid=False``).
    """

    def __init__(self, mae: MaskedSignalModel, n_pixels: int = 784, map_dim: int = 8, hidden: int = 512,
                 dropout: float = 0.2, sigmoid: bool = True):
        super().__init__()
        self.mae = mae
        self.mapper = nn.Linear(mae.dim, map_dim)
        self.head = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(mae.n_patches * map_dim, hidden), nn.LayerNorm(hidden), nn.SiLU(), nn.Dropout(dropout),
            nn.Linear(hidden, n_pixels), *([nn.Sigmoid()] if sigmoid else []),
        )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.mae.tokens(x)

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.mapper(tokens).flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


class MindVisLite(BaseDecoder):
    """Masked signal modelling pretraining, then a conditioned image decoder, fine-tuned.

    Parameters
    ----------
    patch_size : int, optional
        Voxels per patch of the signal vector; by default ``ceil(p / 64)``,
        about 64 patches whatever the number of voxels ``p``.
    dim : int
        Transformer width (token size).
    depth : int
        Transformer layers of the signal encoder.
    heads : int
        Attention heads (``dim`` must be a multiple of it).
    mask_ratio : float
        Share of patches masked in pretraining (0.75).
    pretrain_epochs : int
        Maximum epochs of the masked-signal pretraining.
    fine_tune_epochs : int
        Maximum epochs of the fine-tuning of encoder and image decoder on (X, Y).
    patience : int
        Early stopping of each phase: epochs without improvement on an inner
        validation split of the rows that phase trains on.
    unlabelled : array-like, optional
        Extra signals without images (same features), used for pretraining only.
    random_state : int
        Seeds weights, masks, inner splits and batch order.
    device : str
        Torch device.
    progress : bool
        Per-epoch progress bars.

    Attributes
    ----------
    model_ : ConditionedImageDecoder
        Fine-tuned encoder and image decoder.
    scaler_ : SignalScaler
        Z-scoring fitted on the training (and unlabelled) signals.
    pretrain_result_, fine_tune_result_ : TrainResult
    timings_ : dict
    """

    _min_train_rows = 6
    checkpoint_kind = "mindvis-lite"
    checkpoint_schema = {
        **COMMON_STATE,
        "output_shape_": StateField("shape"),
        "scaler_": StateField("scaler"),
        "model_": StateField("module", build=lambda est: est._image_decoder_for_checkpoint()),
        "pretrain_result_": StateField("any", required=False),
        "fine_tune_result_": StateField("any", required=False),
        "timings_": StateField("any", required=False),
    }

    def __init__(
        self,
        patch_size: int | None = None,
        dim: int = 64,
        depth: int = 2,
        heads: int = 4,
        mask_ratio: float = 0.75,
        pretrain_epochs: int = 100,
        fine_tune_epochs: int = 150,
        patience: int = 15,
        unlabelled=None,
        random_state: int = 0,
        device: str = "cpu",
        progress: bool = False,
    ):
        self.patch_size = patch_size
        self.dim = dim
        self.depth = depth
        self.heads = heads
        self.mask_ratio = mask_ratio
        self.pretrain_epochs = pretrain_epochs
        self.fine_tune_epochs = fine_tune_epochs
        self.patience = patience
        self.unlabelled = unlabelled
        self.random_state = random_state
        self.device = device
        self.progress = progress

    def fit(self, X, Y) -> "MindVisLite":
        """Pretrain on the signals (plus ``unlabelled``), then fine-tune on (X, Y)."""
        if not 0 < self.mask_ratio < 1:
            raise ConfigError(f"mask_ratio={self.mask_ratio!r} must lie in (0, 1)")
        X, Y = self._validate_fit_input(X, Y)
        Y = Y.astype(np.float32)
        if Y.ndim not in (3, 4):
            raise DataValidationError(f"Y must hold images of shape (n, H, W) or (n, H, W, C); got {Y.shape}")
        self.output_shape_ = tuple(Y.shape[1:])
        signals = X
        if self.unlabelled is not None:
            U = validate_signals(np.asarray(self.unlabelled), key="unlabelled", n_features=X.shape[1],
                                 allow_degenerate=True)
            signals = np.concatenate([X, U], axis=0)
        self.scaler_ = SignalScaler().fit(signals)
        S = self.scaler_.transform(signals)
        seed = self._seed()
        timings = {}

        t0 = time.perf_counter()
        dev = resolve_device(self.device)
        patch = self.patch_size or max(1, math.ceil(X.shape[1] / 64))
        mae, init_state = seeded_init(
            lambda: MaskedSignalModel(X.shape[1], patch, self.dim, self.depth, self.heads, self.mask_ratio), seed)
        mae.generator = seeded_generator(seed + 1, dev)
        with isolated_rng(seed, dev, cpu_state=init_state):  # dropout layers draw from the (forked) global stream
            self.pretrain_result_ = train_network(mae, S, S, seed=seed, epochs=self.pretrain_epochs,
                                                  patience=self.patience, lr=1e-3, batch_size=32, device=dev,
                                                  progress=self.progress, name="mindvis-pretrain",
                                                  compute_loss=lambda model, batch: model.compute_loss(batch))
        mae.cpu()
        mae.generator = None
        timings["pretrain"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        n_pix = int(np.prod(self.output_shape_))
        self.model_, init_state = seeded_init(lambda: self._image_decoder(mae, n_pix, Y), seed + 2)
        Xs = self.scaler_.transform(X)
        with isolated_rng(seed + 2, dev, cpu_state=init_state):
            self.fine_tune_result_ = train_network(self.model_, Xs, Y.reshape(len(Y), n_pix), seed=seed,
                                                  epochs=self.fine_tune_epochs, patience=self.patience, lr=1e-3,
                                                  batch_size=32, weight_decay=1e-4, device=dev,
                                                  progress=self.progress, name="mindvis-finetune")
        self.model_.cpu().eval()
        timings["finetune"] = time.perf_counter() - t0
        self.timings_ = timings
        logger.info("mindvis-lite fit: %s", {k: round(v, 2) for k, v in timings.items()})
        return self

    def _check_params(self) -> None:
        """Check every parameter (``ConfigError`` naming the value and the allowed ones); run on every load."""
        super()._check_params()
        check_number(self, "patch_size", low=1, integer=True, none=True)
        for name in ("dim", "depth", "heads"):
            check_number(self, name, low=1, integer=True)
        if self.dim % self.heads:
            raise ConfigError(f"dim={self.dim!r} is not a multiple of heads={self.heads!r}; allowed: dim % heads == 0")
        check_number(self, "mask_ratio", low=0, low_open=True, high=1)
        if self.mask_ratio == 1:
            raise ConfigError(f"mask_ratio={self.mask_ratio!r} must lie in (0, 1)")
        for name in ("pretrain_epochs", "fine_tune_epochs", "patience"):
            check_number(self, name, low=0, integer=True)

    def _masked_model_for_checkpoint(self) -> MaskedSignalModel:
        """The signal encoder of this decoder's shape (weights are loaded into it from a checkpoint)."""
        n = int(self.n_features_in_)
        patch = self.patch_size or max(1, math.ceil(n / 64))
        return MaskedSignalModel(n, patch, self.dim, self.depth, self.heads, self.mask_ratio)

    def _image_decoder_for_checkpoint(self) -> nn.Module:
        """The untrained image decoder whose weights a checkpoint holds (see :meth:`_image_decoder`)."""
        return ConditionedImageDecoder(self._masked_model_for_checkpoint(), math.prod(self.output_shape_))

    def _image_decoder(self, mae: MaskedSignalModel, n_pixels: int, Y: np.ndarray) -> nn.Module:
        """The image decoder fine-tuned on the encoder (a hook; ``Y`` holds the training images).

        :class:`cortexflow.priors.baselines.MindVisPrior` decodes through an external image prior instead.
        """
        return ConditionedImageDecoder(mae, n_pixels)

    @torch.no_grad()
    def predict(self, X) -> np.ndarray:
        """Reconstructions, shape (n, *output_shape) (the training images' shape), in [0, 1]."""
        check_is_fitted(self, "model_")
        X = self._validate_X(X, reset=False)
        self.model_.eval()
        out = self.model_(torch.as_tensor(self.scaler_.transform(X)))
        return out.numpy().reshape((len(X),) + self.output_shape_).astype(np.float32)


# ---------------------------------------------------------------- registration
#: ``fast=True`` settings (tests and smoke runs)
FAST_SETTINGS = {"pretrain_epochs": 2, "fine_tune_epochs": 2, "patience": 1, "dim": 16, "depth": 1}


def _mindvis_lite_factory(seed: int, dataset_name: str, n_train: int, *, fast: bool = False, **options) -> MindVisLite:
    if fast:
        options = {**FAST_SETTINGS, **options}
    return MindVisLite(random_state=seed, **options)


register_method(
    "mindvis-lite", _mindvis_lite_factory, estimator=MindVisLite,
    description="masked signal modelling pretraining + conditioned image decoder, fine-tuned",
    sklearn_xfail=images_only("check_regressor_data_not_an_array"),
    check_params={"pretrain_epochs": 1, "fine_tune_epochs": 1, "patience": 1, "dim": 16, "depth": 1},
)
