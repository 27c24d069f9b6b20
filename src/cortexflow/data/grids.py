"""Images that are nearest-neighbour upscalings of a coarse grid: the upscaling rule and its exact inverse.

Miyawaki et al.'s stimuli are 10 x 10 binary patterns; the registered file
stores them upscaled to 28 x 28. The upscaling it uses is nearest-neighbour
with aligned corners: output pixel ``i`` of ``s`` takes grid cell
``floor(i * (g - 1) / (s - 1) + 1/2)`` of ``g`` (so the first and last cells
are 2 pixels wide and the eight inner ones 3: 2 + 8 x 3 + 2 = 28).
:func:`recover_grid` takes one pixel per cell and refuses any image that
:func:`upscale_grid` would not give back exactly, so the round trip is proven
on every image it returns.
"""

from __future__ import annotations

import numpy as np

from cortexflow.exceptions import DataValidationError

__all__ = ["grid_index", "upscale_grid", "recover_grid"]


def grid_index(n_out: int, n_grid: int) -> np.ndarray:
    """Grid cell of each of ``n_out`` output pixels (nearest neighbour, corners aligned, halves rounded up).

    Parameters
    ----------
    n_out : int
        Output side in pixels (>= 2).
    n_grid : int
        Grid side in cells (1 <= ``n_grid`` <= ``n_out``).

    Returns
    -------
    ndarray of int, shape (n_out,)
    """
    if not 1 <= n_grid <= n_out or n_out < 2:
        raise DataValidationError(
            f"a grid of {n_grid} cells cannot be upscaled to {n_out} pixels (need 1 <= cells <= pixels, pixels >= 2)"
        )
    # exact rational arithmetic: i * (g - 1) / (s - 1) + 1/2, floored
    return (2 * np.arange(n_out) * (n_grid - 1) + (n_out - 1)) // (2 * (n_out - 1))


def upscale_grid(grid: np.ndarray, image_shape: tuple[int, int]) -> np.ndarray:
    """Upscale (n, g_h, g_w[, C]) grids to (n, H, W[, C]) images by the rule of :func:`grid_index`."""
    grid = np.asarray(grid)
    rows = grid_index(int(image_shape[0]), grid.shape[1])
    cols = grid_index(int(image_shape[1]), grid.shape[2])
    return grid[:, rows][:, :, cols]


def recover_grid(images: np.ndarray, grid_shape: tuple[int, int], *, source: str = "<array>", key: str = "Y") -> np.ndarray:
    """The exact (n, g_h, g_w[, C]) grids of which ``images`` are :func:`upscale_grid` upscalings.

    Parameters
    ----------
    images : ndarray, shape (n, H, W) or (n, H, W, C)
    grid_shape : (int, int)
        Cells per column and per row of the grid (``(10, 10)`` for miyawaki).
    source, key : str
        Named in the error message.

    Returns
    -------
    ndarray, shape (n, g_h, g_w) or (n, g_h, g_w, C), same dtype as ``images``

    Raises
    ------
    DataValidationError
        When an image is not constant on the cells of the grid, i.e. upscaling
        the recovered grid would not give it back exactly (names the first
        such image and how many there are).
    """
    images = np.asarray(images)
    gh, gw = (int(v) for v in grid_shape)
    rows, cols = grid_index(images.shape[1], gh), grid_index(images.shape[2], gw)
    # the first pixel of every cell stands for the cell
    first_r = np.searchsorted(rows, np.arange(gh))
    first_c = np.searchsorted(cols, np.arange(gw))
    grid = images[:, first_r][:, :, first_c]
    back = upscale_grid(grid, images.shape[1:3])
    bad = np.flatnonzero(~np.all((back == images).reshape(len(images), -1), axis=1))
    if bad.size:
        raise DataValidationError(
            f"{source}: key {key!r}: {bad.size} of {len(images)} image(s) are not exact nearest-neighbour upscalings "
            f"of a {gh} x {gw} grid (first: row {int(bad[0])}); the grid cannot be recovered without loss"
        )
    return np.ascontiguousarray(grid)
