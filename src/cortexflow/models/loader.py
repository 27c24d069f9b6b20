"""Load any CortexFlow checkpoint: its ``kind`` field picks the decoder class.

The kinds and their classes are derived from the method registry
(:func:`cortexflow.registry.methods.checkpoint_kinds`): every registered
method's estimator class declares its ``checkpoint_kind``. ``cortexflow
methods list`` shows them.

A checkpoint written before the ``kind`` field existed holds one CCCV1-family
network; its ``estimator`` field (when present) names the class, else it loads
as :class:`CCCV1Decoder`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any

from cortexflow.exceptions import CheckpointError
from cortexflow.models.checkpoint import checkpoint_kind, read_checkpoint_meta
from cortexflow.registry.methods import checkpoint_kinds
from cortexflow.models.estimator import CCCV1Decoder

__all__ = ["DECODER_KINDS", "load_decoder", "decoder_class"]

class _Kinds(Mapping):
    """Checkpoint kind -> the class that loads it (read from the method registry when first used)."""

    def _kinds(self) -> dict[str, type]:
        return checkpoint_kinds()

    def __getitem__(self, kind: str) -> type:
        return self._kinds()[kind]

    def __iter__(self) -> Iterator[str]:
        return iter(self._kinds())

    def __len__(self) -> int:
        return len(self._kinds())


#: Checkpoint kind -> the class that loads it.
DECODER_KINDS: Mapping[str, type] = _Kinds()
_LEGACY = ("CCCV1Decoder", "CCCV1SemanticDecoder", "EEGDecoder")


def decoder_class(meta: dict[str, Any]) -> type:
    """The class that loads a checkpoint with metadata ``meta``.

    Raises
    ------
    CheckpointError
        A ``kind`` this CortexFlow does not know (the message lists the known ones).
    """
    kind = checkpoint_kind(meta)
    if kind is None:
        name = meta.get("estimator")
        legacy = {cls.__name__: cls for cls in DECODER_KINDS.values() if cls.__name__ in _LEGACY}
        return legacy.get(name, CCCV1Decoder) if isinstance(name, str) else CCCV1Decoder
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
