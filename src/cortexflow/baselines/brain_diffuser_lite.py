"""``brain-diffuser-lite``: the two-stage structure of Brain-Diffuser at 28 x 28 scale.

Brain-Diffuser (Ozcelik and VanRullen 2023) first regresses fMRI onto the
latents of a VDVAE and decodes a low-level image (stage 1), then regresses
fMRI onto CLIP-vision and CLIP-text features and runs Versatile Diffusion
image-to-image from the stage-1 image (strength 0.75), guided by the predicted
features (stage 2). This lite version keeps that structure and trains every
part on the training rows of the split only:

Stage 1
    A small VAE (MLP, 784-256-16) trained on the training stimuli; ridge
    regression (penalty by inner leave-one-out CV) from z-scored signals to
    the VAE posterior means; the decoded predicted latent is the low-level image.
Stage 2
    Ridge regression from signals to image features (by default the VAE
    latent, z-scored; any callable ``features`` -- for example a pretrained
    image encoder -- can replace it), and a small conditional denoising
    network (x0-prediction, cosine noise schedule) trained on the training
    stimuli conditioned on their true features. At prediction time the
    stage-1 image is noised to ``strength`` and denoised in ``steps``
    deterministic DDIM steps, conditioned on the predicted features.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.utils.validation import check_is_fitted
from torch import nn

from cortexflow.baselines._common import check_alphas, fit_ridge_cv, train_network
from cortexflow.data.preprocessing import SignalScaler
from cortexflow.exceptions import ConfigError, DataValidationError
from cortexflow.models.base import COMMON_STATE, BaseDecoder, check_number
from cortexflow.models.checkpoint import StateField
from cortexflow.training.devices import resolve_device
from cortexflow.training.seeding import isolated_rng, seeded_generator, seeded_init
from cortexflow.registry.methods import register_method
from cortexflow.registry.sklearn_notes import images_only

__all__ = ["BrainDiffuserLite", "ImageVAE", "ConditionalDenoiser"]

logger = logging.getLogger(__name__)


def _alpha_bar(t: torch.Tensor) -> torch.Tensor:
    """Cosine schedule: signal fraction at noise level t in [0, 1]."""
    return torch.cos(0.5 * math.pi * t).clamp(min=0.0) ** 2


class ImageVAE(nn.Module):
    """MLP VAE of flattened images in [0, 1].

    ``encode`` returns a reparameterised sample while training (noise from
    ``generator``, on the input's device) and the posterior mean in eval mode;
    :meth:`compute_loss` is its training loss (pixel MSE plus weighted KL).
    """

    def __init__(self, n_pixels: int = 784, hidden: int = 256, latent: int = 16):
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(n_pixels, hidden), nn.SiLU(), nn.Linear(hidden, 2 * latent))
        self.dec = nn.Sequential(nn.Linear(latent, hidden), nn.SiLU(), nn.Linear(hidden, n_pixels), nn.Sigmoid())
        self.latent = latent
        self.generator: torch.Generator | None = None

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.enc(x.reshape(len(x), -1)).chunk(2, dim=-1)
        return mu, logvar.clamp(-10.0, 10.0)

    def _sample(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return mu
        eps = torch.randn(mu.shape, generator=self.generator, dtype=mu.dtype, device=mu.device)
        return mu + torch.exp(0.5 * logvar) * eps

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self._sample(*self.posterior(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.dec(z)

    def kl(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """KL(q(z|x) || N(0, I)) per pixel, averaged over the batch."""
        kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=-1)
        return kl.mean() / self.dec[-2].out_features

    def compute_loss(self, batch: dict, kl_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
        """``(pixel MSE + kl_weight * KL, pixel MSE)`` of a trainer batch (see :func:`~cortexflow.training.train_model`)."""
        mu, logvar = self.posterior(batch["x"])
        pred = self.decode(self._sample(mu, logvar))
        pix = F.mse_loss(pred, batch["target"].reshape(pred.shape))
        return pix + float(kl_weight) * self.kl(mu, logvar), pix


class ConditionalDenoiser(nn.Module):
    """Predicts the clean image from a noised one, its noise level and a feature vector.

    For the trainer, ``encode`` takes rows ``[image (n_pixels), features]``
    and returns them noised at a random level (fixed noise in eval mode, so
    that the validation loss is comparable between epochs); ``decode``
    denoises. Images live in [-1, 1] inside the network and in [0, 1] outside.
    """

    def __init__(self, n_pixels: int, cond_dim: int, hidden: int = 512, cond_noise: float = 0.3,
                 t_min: float = 0.02, dropout: float = 0.1):
        super().__init__()
        self.n_pixels, self.cond_dim = n_pixels, cond_dim
        self.cond_noise, self.t_min = cond_noise, t_min
        self.register_buffer("freqs", torch.arange(1, 9, dtype=torch.float32) * math.pi)
        self.net = nn.Sequential(
            nn.Linear(n_pixels + cond_dim + 16, hidden), nn.SiLU(), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.SiLU(), nn.Dropout(dropout),
            nn.Linear(hidden, n_pixels), nn.Tanh(),
        )
        self.generator: torch.Generator | None = None

    def denoise(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Clean-image estimate in [-1, 1]."""
        temb = torch.cat([torch.sin(t[:, None] * self.freqs), torch.cos(t[:, None] * self.freqs)], dim=-1)
        return self.net(torch.cat([x_t, cond, temb], dim=-1))

    def encode(self, rows: torch.Tensor) -> torch.Tensor:
        x0 = rows[:, : self.n_pixels] * 2 - 1
        cond = rows[:, self.n_pixels :]
        dev = rows.device
        gen = self.generator if self.training else seeded_generator(0, dev)
        n = len(rows)
        t = self.t_min + (1 - self.t_min) * torch.rand(n, generator=gen, device=dev)
        eps = torch.randn(x0.shape, generator=gen, device=dev)
        a = _alpha_bar(t)[:, None]
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
        if self.cond_noise > 0:
            cond = cond + self.cond_noise * torch.randn(cond.shape, generator=gen, device=dev)
        return torch.cat([x_t, t[:, None], cond], dim=-1)

    def decode(self, packed: torch.Tensor) -> torch.Tensor:
        x_t = packed[:, : self.n_pixels]
        t = packed[:, self.n_pixels]
        cond = packed[:, self.n_pixels + 1 :]
        return (self.denoise(x_t, t, cond) + 1) / 2

    @torch.no_grad()
    def sample_from(self, x_init: torch.Tensor, cond: torch.Tensor, strength: float, steps: int,
                    generator: torch.Generator) -> torch.Tensor:
        """Image-to-image: noise ``x_init`` (in [0, 1]) to level ``strength``, then DDIM-denoise to 0."""
        x0 = x_init * 2 - 1
        ts = torch.linspace(strength, 0.0, steps + 1, device=x0.device)
        a0 = _alpha_bar(ts[:1])
        x = a0.sqrt() * x0 + (1 - a0).sqrt() * torch.randn(x0.shape, generator=generator, device=x0.device)
        x0_hat = x0
        for k in range(steps):
            t = ts[k].expand(len(x))
            x0_hat = self.denoise(x, t, cond)
            a_k, a_next = _alpha_bar(ts[k]), _alpha_bar(ts[k + 1])
            eps_hat = (x - a_k.sqrt() * x0_hat) / (1 - a_k).clamp(min=1e-8).sqrt()
            x = a_next.sqrt() * x0_hat + (1 - a_next).sqrt() * eps_hat
        return ((x0_hat + 1) / 2).clamp(0, 1)


class BrainDiffuserLite(BaseDecoder):
    """Two-stage reconstruction after Brain-Diffuser, small enough for a CPU.

    Parameters
    ----------
    latent_dim : int
        VAE latent size (stage 1).
    vae_epochs, denoiser_epochs, patience : int
        Maximum epochs of each network and early-stopping patience (inner
        validation split of the training rows).
    kl_weight : float
        Weight of the per-pixel KL term of the VAE.
    strength : float
        Noise level in (0, 1] to which the stage-1 image is pushed before
        denoising (0.75, as Brain-Diffuser's image-to-image strength).
    steps : int
        Denoising steps at prediction time.
    features : callable, optional
        ``features(images (n, *image_shape)) -> (n, d)``: the semantic features that
        stage 2 regresses onto and conditions on. Default: the VAE latent.
    alphas : array-like, optional
        Ridge penalty grid (inner leave-one-out on the training rows).
    random_state : int
        Seeds weights, inner splits, batch order, noise and the sampler.
    device : str
        Torch device (``"cpu"`` by default; the networks are tiny).
    progress : bool
        Per-epoch progress bars.

    Attributes
    ----------
    vae_, denoiser_ : nn.Module
    scaler_ : SignalScaler
    latent_ridge_, feature_ridge_ : sklearn.linear_model.RidgeCV
    feature_mean_, feature_scale_ : ndarray
        Standardisation of the features (training stimuli).
    timings_ : dict
        Seconds per stage of the last ``fit``.
    """

    _min_train_rows = 6
    checkpoint_kind = "brain-diffuser-lite"
    checkpoint_schema = {
        **COMMON_STATE,
        "output_shape_": StateField("shape"),
        "seed_": StateField("int", low=0),
        "vae_": StateField("module", build=lambda est: est._image_model_for_checkpoint()),
        "scaler_": StateField("scaler"),
        "latent_ridge_": StateField("ridge", shape=("latent",)),
        "feature_mean_": StateField("array", shape=("cond",)),
        "feature_scale_": StateField("array", shape=("cond",), low=0, low_open=True),
        "feature_ridge_": StateField("ridge", shape=("cond",)),
        "denoiser_": StateField("module", build=lambda est: ConditionalDenoiser(
            math.prod(est.output_shape_), len(est.feature_mean_))),
        "timings_": StateField("any", required=False),
    }

    def __init__(
        self,
        latent_dim: int = 16,
        vae_epochs: int = 300,
        denoiser_epochs: int = 300,
        patience: int = 20,
        kl_weight: float = 0.01,
        strength: float = 0.75,
        steps: int = 10,
        features: Callable[[np.ndarray], np.ndarray] | None = None,
        alphas=None,
        random_state: int = 0,
        device: str = "cpu",
        progress: bool = False,
    ):
        self.latent_dim = latent_dim
        self.vae_epochs = vae_epochs
        self.denoiser_epochs = denoiser_epochs
        self.patience = patience
        self.kl_weight = kl_weight
        self.strength = strength
        self.steps = steps
        self.features = features
        self.alphas = alphas
        self.random_state = random_state
        self.device = device
        self.progress = progress

    def _check_params(self) -> None:
        """Check every parameter (``ConfigError`` naming the value and the allowed ones); run on every load."""
        super()._check_params()
        check_number(self, "latent_dim", low=1, integer=True)
        for name in ("vae_epochs", "denoiser_epochs", "patience"):
            check_number(self, name, low=0, integer=True)
        check_number(self, "kl_weight", low=0)
        check_number(self, "strength", low=0, low_open=True, high=1)
        check_number(self, "steps", low=1, integer=True)
        if self.features is not None and not callable(self.features):
            raise ConfigError(f"features={self.features!r} is not allowed; allowed: None or a callable")
        check_alphas(self.alphas)

    def _image_model_for_checkpoint(self) -> nn.Module:
        """The untrained stage-1 image model whose weights a checkpoint holds (a hook, like :meth:`_fit_image_model`)."""
        return ImageVAE(math.prod(self.output_shape_), 256, self.latent_dim)

    def _features(self, images: np.ndarray) -> np.ndarray:
        if self.features is not None:
            return np.asarray(self.features(images), dtype=np.float64).reshape(len(images), -1)
        with torch.no_grad():
            self.vae_.eval()
            mu, _ = self.vae_.posterior(torch.as_tensor(images.reshape(len(images), -1), dtype=torch.float32))
        return mu.numpy().astype(np.float64)

    def fit(self, X, Y) -> "BrainDiffuserLite":
        """Train both stages on the training rows (X, Y)."""
        if not 0 < self.strength <= 1:
            raise ConfigError(f"strength={self.strength!r} must lie in (0, 1]")
        if self.steps < 1:
            raise ConfigError(f"steps={self.steps!r} must be at least 1")
        X, Y = self._validate_fit_input(X, Y)
        Y = Y.astype(np.float32)
        if Y.min() < 0 or Y.max() > 1:
            raise DataValidationError(f"Y must hold images in [0, 1]; got values in [{Y.min():.3g}, {Y.max():.3g}]")
        self.output_shape_ = tuple(Y.shape[1:])
        n_pix = int(np.prod(self.output_shape_))
        Yf = Y.reshape(len(Y), n_pix)
        self.seed_ = seed = self._seed()
        dev = resolve_device(self.device)
        timings = {}

        # stage 1: VAE on the training stimuli, ridge from signals to its latent
        t0 = time.perf_counter()
        self.vae_ = self._fit_image_model(Yf, seed)
        timings["vae"] = time.perf_counter() - t0

        self.scaler_ = SignalScaler().fit(X)
        Xs = self.scaler_.transform(X).astype(np.float64)
        latents = self._features_latent(Yf)
        self.latent_ridge_ = fit_ridge_cv(Xs, latents, self.alphas)

        # stage 2: ridge to features; denoiser trained on true stimuli + their features
        t0 = time.perf_counter()
        feats = latents if self.features is None else self._features(Y)
        self.feature_mean_ = feats.mean(axis=0)
        self.feature_scale_ = np.where(feats.std(axis=0) > 0, feats.std(axis=0), 1.0)
        fz = (feats - self.feature_mean_) / self.feature_scale_
        self.feature_ridge_ = fit_ridge_cv(Xs, fz, self.alphas)
        self.denoiser_, init_state = seeded_init(lambda: ConditionalDenoiser(n_pix, fz.shape[1]), seed + 2)
        self.denoiser_.generator = seeded_generator(seed + 3, dev)
        rows = np.concatenate([Yf, fz.astype(np.float32)], axis=1)
        with isolated_rng(seed + 2, dev, cpu_state=init_state):  # nn.Dropout draws from the (forked) global stream
            train_network(self.denoiser_, rows, Yf, seed=seed, epochs=self.denoiser_epochs, patience=self.patience,
                          lr=1e-3, batch_size=32, device=dev, progress=self.progress, name="bdl-denoiser")
        self.denoiser_.cpu().eval()
        self.denoiser_.generator = None
        timings["denoiser"] = time.perf_counter() - t0
        self.timings_ = timings
        logger.info("brain-diffuser-lite fit: %s", {k: round(v, 2) for k, v in timings.items()})
        return self

    def _fit_image_model(self, Yf: np.ndarray, seed: int) -> nn.Module:
        """Stage 1's image model (``posterior(x) -> (mu, logvar)``, ``decode(z)``): a VAE of the training stimuli.

        A hook: :class:`cortexflow.priors.baselines.BrainDiffuserPrior` returns an external image prior instead.
        """
        dev = resolve_device(self.device)
        kl_weight = float(self.kl_weight)
        vae, _ = seeded_init(lambda: ImageVAE(Yf.shape[1], 256, self.latent_dim), seed)
        vae.generator = seeded_generator(seed + 1, dev)
        train_network(vae, Yf, Yf, seed=seed, epochs=self.vae_epochs, patience=self.patience, lr=2e-3,
                      batch_size=32, device=dev, progress=self.progress, name="bdl-vae",
                      compute_loss=lambda model, batch: model.compute_loss(batch, kl_weight))
        vae.cpu().eval()
        vae.generator = None
        return vae

    def _features_latent(self, Yf: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            mu, _ = self.vae_.posterior(torch.as_tensor(Yf, dtype=torch.float32))
        return mu.numpy().astype(np.float64)

    def _check_X(self, X) -> np.ndarray:
        check_is_fitted(self, "denoiser_")
        X = self._validate_X(X, reset=False)
        return self.scaler_.transform(X).astype(np.float64)

    @torch.no_grad()
    def predict_stage1(self, X) -> np.ndarray:
        """Low-level images: the VAE decoding of the latents predicted by ridge."""
        Xs = self._check_X(X)
        z = torch.as_tensor(self.latent_ridge_.predict(Xs), dtype=torch.float32)
        return self.vae_.decode(z).numpy().reshape((len(Xs),) + self.output_shape_)

    @torch.no_grad()
    def predict(self, X) -> np.ndarray:
        """Final reconstructions (stage 2), shape (n, *output_shape) (the training images' shape), in [0, 1]."""
        Xs = self._check_X(X)
        init = torch.as_tensor(self.predict_stage1(X).reshape(len(Xs), -1), dtype=torch.float32)
        cond = torch.as_tensor(self.feature_ridge_.predict(Xs), dtype=torch.float32)
        out = self.denoiser_.sample_from(init, cond, float(self.strength), int(self.steps),
                                         seeded_generator(self.seed_ + 4))
        return out.numpy().reshape((len(Xs),) + self.output_shape_).astype(np.float32)


# ---------------------------------------------------------------- registration
#: ``fast=True`` settings (tests and smoke runs)
FAST_SETTINGS = {"vae_epochs": 3, "denoiser_epochs": 3, "patience": 2, "steps": 2}


def _brain_diffuser_lite_factory(seed: int, dataset_name: str, n_train: int, *, fast: bool = False,
                                 **options) -> BrainDiffuserLite:
    if fast:
        options = {**FAST_SETTINGS, **options}
    return BrainDiffuserLite(random_state=seed, **options)


register_method(
    "brain-diffuser-lite", _brain_diffuser_lite_factory, estimator=BrainDiffuserLite,
    description="VAE-latent ridge + feature-conditioned denoiser from the stage-1 image",
    # three of the non-image checks happen to draw targets in [0, 1], which the decoder accepts
    sklearn_xfail=images_only("check_regressor_data_not_an_array", but=(
        "check_pipeline_consistency", "check_estimators_nan_inf", "check_estimators_pickle")),
    check_params={"vae_epochs": 2, "denoiser_epochs": 2, "patience": 1, "steps": 2},
)
