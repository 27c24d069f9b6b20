"""Load any CortexFlow checkpoint: its ``kind`` field picks the decoder class.

==========================  ====================================================================
kind                        class
==========================  ====================================================================
``cccv1``                   :class:`~cortexflow.models.estimator.CCCV1Decoder`
``cccv1-semantic``          :class:`~cortexflow.semantic.decoder.CCCV1SemanticDecoder`
``cccv1-eeg``               :class:`~cortexflow.models.eeg_estimator.EEGDecoder`
``cccv1-ensemble``          :class:`~cortexflow.models.ensemble.CCCV1EnsembleDecoder`
``ridge-prior``             :class:`~cortexflow.priors.ridge_prior.RidgePriorDecoder`
``cccv1-prior``             :class:`~cortexflow.priors.cccv1_prior.CCCV1PriorDecoder`
``mean-image``              :class:`~cortexflow.baselines.mean_image.MeanImageDecoder`
``ridge``                   :class:`~cortexflow.baselines.ridge.RidgeDecoder`
``brain-diffuser-lite``     :class:`~cortexflow.baselines.brain_diffuser_lite.BrainDiffuserLite`
``mindvis-lite``            :class:`~cortexflow.baselines.mindvis_lite.MindVisLite`
``brain-diffuser-prior``    :class:`~cortexflow.priors.baselines.BrainDiffuserPrior`
``mindvis-prior``           :class:`~cortexflow.priors.baselines.MindVisPrior`
==========================  ====================================================================

A checkpoint written before the ``kind`` field existed holds one CCCV1-family
network; its ``estimator`` field (when present) names the class, else it loads
as :class:`CCCV1Decoder`.
"""

from __future__ import annotations

import os
from typing import Any

from cortexflow.baselines import BrainDiffuserLite, MeanImageDecoder, MindVisLite, RidgeDecoder
from cortexflow.exceptions import CheckpointError
from cortexflow.models.checkpoint import checkpoint_kind, read_checkpoint_meta
from cortexflow.models.eeg_estimator import EEGDecoder
from cortexflow.models.ensemble import CCCV1EnsembleDecoder
from cortexflow.models.estimator import CCCV1Decoder
from cortexflow.priors.baselines import BrainDiffuserPrior, MindVisPrior
from cortexflow.priors.cccv1_prior import CCCV1PriorDecoder
from cortexflow.priors.ridge_prior import RidgePriorDecoder
from cortexflow.semantic.decoder import CCCV1SemanticDecoder

__all__ = ["DECODER_KINDS", "load_decoder", "decoder_class"]

#: Checkpoint kind -> the class that loads it.
DECODER_KINDS: dict[str, type] = {
    cls.checkpoint_kind: cls
    for cls in (CCCV1Decoder, CCCV1SemanticDecoder, EEGDecoder, CCCV1EnsembleDecoder, RidgePriorDecoder,
                CCCV1PriorDecoder, MeanImageDecoder, RidgeDecoder, BrainDiffuserLite, MindVisLite, BrainDiffuserPrior,
                MindVisPrior)
}
_LEGACY_CLASSES = {cls.__name__: cls for cls in (CCCV1Decoder, CCCV1SemanticDecoder, EEGDecoder)}


def decoder_class(meta: dict[str, Any]) -> type:
    """The class that loads a checkpoint with metadata ``meta``.

    Raises
    ------
    CheckpointError
        A ``kind`` this CortexFlow does not know (the message lists the known ones).
    """
    kind = checkpoint_kind(meta)
    if kind is None:
        return _LEGACY_CLASSES.get(meta.get("estimator"), CCCV1Decoder)
    if kind not in DECODER_KINDS:
        raise CheckpointError(f"checkpoint kind {kind!r} is unknown to this CortexFlow; known kinds: "
                              f"{', '.join(sorted(DECODER_KINDS))} (a newer version may have written it)")
    return DECODER_KINDS[kind]


def load_decoder(path: str | os.PathLike, device: str = "auto") -> Any:
    """Load the fitted decoder of any supported checkpoint folder.

    Parameters
    ----------
    path : path-like
        A checkpoint folder (``checkpoint.json`` and ``model.safetensors``).
    device : str
        Device of the torch decoders (``"auto"``, ``"cpu"``, ``"cuda"``...);
        ``ridge-prior`` ignores it.

    Returns
    -------
    A fitted decoder with ``predict`` (see the table in the module docstring).

    Raises
    ------
    CheckpointError
        Missing or damaged files, an unknown kind, a weights hash that differs.
    """
    meta, _, meta_path, _ = read_checkpoint_meta(path)
    try:
        cls = decoder_class(meta)
    except CheckpointError as exc:
        raise CheckpointError(f"checkpoint {meta_path}: {exc}") from exc
    return cls.load(path, device=device)
