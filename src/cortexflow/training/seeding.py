"""Random streams owned by an estimator: seeded initialisation and dropout without global seeding.

``fit`` of a CortexFlow estimator must not change PyTorch's global random
state (a user's own ``torch.manual_seed`` must still mean what it did). The
helpers here give each fit its own streams:

* :func:`seeded_init` builds a network with its weights drawn as after
  ``torch.manual_seed(seed)`` (so ``random_state=0`` gives the same weights as
  ever) and returns the stream's state right after initialisation;
* :func:`dropout_generator` turns that state into the fit's own
  ``torch.Generator`` on the training device, which
  :func:`attach_dropout_generator` hands to the network's
  :class:`~cortexflow.models.cccv1.StreamDropout` layers;
* :func:`isolated_rng` runs code that draws from PyTorch's global generators
  (layers such as ``nn.Dropout`` that take no generator) on a seeded, forked
  copy of them, restored afterwards.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, TypeVar

import torch
from torch import nn

from cortexflow.models.cccv1 import StreamDropout

__all__ = ["isolated_rng", "seeded_init", "dropout_generator", "attach_dropout_generator", "seeded_generator"]

M = TypeVar("M", bound=nn.Module)


def _cuda_index(device: "str | torch.device | None") -> int | None:
    if device is None:
        return None
    dev = torch.device(device)
    if dev.type != "cuda":
        return None
    return dev.index if dev.index is not None else torch.cuda.current_device()


@contextlib.contextmanager
def isolated_rng(seed: int | None = None, device: "str | torch.device | None" = None, *,
                 cpu_state: torch.Tensor | None = None) -> Iterator[None]:
    """Run the block on forked global generators, seeded, and restore them afterwards.

    Parameters
    ----------
    seed : int, optional
        Seeds PyTorch's global CPU generator (and the CUDA generator of
        ``device``) inside the block, as ``torch.manual_seed(seed)`` would.
    device : str or torch.device, optional
        A CUDA device whose generator is forked (and seeded) too.
    cpu_state : torch.Tensor, optional
        Start the CPU generator from this state instead of ``seed``.
    """
    idx = _cuda_index(device)
    with torch.random.fork_rng(devices=[] if idx is None else [idx]):
        if cpu_state is not None:
            torch.set_rng_state(cpu_state)
        elif seed is not None:
            torch.default_generator.manual_seed(int(seed))
        if idx is not None and seed is not None:
            with torch.cuda.device(idx):
                torch.cuda.manual_seed(int(seed))
        yield


def seeded_init(build: Callable[[], M], seed: int) -> tuple[M, torch.Tensor]:
    """Build a network with its initial weights drawn from a stream seeded with ``seed``.

    The weights equal those of ``torch.manual_seed(seed); build()``; PyTorch's
    global generator is left as it was.

    Returns
    -------
    (module, torch.Tensor)
        The network and the CPU stream's state right after initialisation
        (where the fit's dropout stream continues, see :func:`dropout_generator`).
    """
    with isolated_rng(seed):
        module = build()
        state = torch.get_rng_state()
    return module, state


def dropout_generator(device: torch.device, seed: int, init_state: torch.Tensor | None = None) -> torch.Generator:
    """The fit's own dropout stream on ``device``.

    On CPU it continues the initialisation stream (``init_state``, see
    :func:`seeded_init`): the masks are those that global seeding used to give.
    On another device it is that device's generator seeded with ``seed``
    (what ``torch.manual_seed(seed)`` did to the CUDA generator).
    """
    gen = torch.Generator(device=device)
    if device.type == "cpu" and init_state is not None:
        gen.set_state(init_state)
    else:
        gen.manual_seed(int(seed))
    return gen


def attach_dropout_generator(model: nn.Module, generator: torch.Generator | None) -> bool:
    """Give every :class:`StreamDropout` of ``model`` its masks from ``generator`` (``None`` detaches).

    Returns False, attaching nothing, when ``model`` has other random layers
    (a plain ``nn.Dropout``, for example in an EEG front-end): those draw from
    the global stream, and the StreamDropout layers then stay on it too, so
    that all masks keep coming from one stream in the order they always did.
    """
    drops = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    if generator is not None and any(not isinstance(m, StreamDropout) for m in drops):
        return False
    for m in drops:
        if isinstance(m, StreamDropout):
            m.generator = generator
    return True


def seeded_generator(seed: int, device: "str | torch.device | None" = None) -> torch.Generator:
    """A torch generator on ``device`` (CPU by default) seeded with ``seed``."""
    g = torch.Generator(device=torch.device(device) if device is not None else "cpu")
    g.manual_seed(int(seed))
    return g
