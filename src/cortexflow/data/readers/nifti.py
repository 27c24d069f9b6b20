"""Per-trial response maps from a 4D NIfTI, masked by a mask image or an atlas label image (nibabel).

One volume per trial (beta, t or response maps, as a GLM such as nilearn's
``FirstLevelModel`` with one regressor per trial writes them). The mask keeps
the voxels whose value is non-zero; an atlas keeps those whose label is in a
list. The rows are the masked voxels in the order of ``data[mask]`` (C order
over i, j, k), which is also the order of nilearn's ``NiftiMasker``; the voxel
indices (i, j, k) and their world coordinates (mm, from the affine) are
returned too.

A 4D NIfTI of raw time series (more volumes than trials, or a header that
gives a repetition time) is refused: CortexFlow decodes one response per
trial, and estimating those from a run is an analysis choice (GLM, LSS) that
belongs before it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cortexflow.data.readers._optional import require
from cortexflow.exceptions import DataValidationError

__all__ = ["NIFTI_SUFFIXES", "NiftiTrials", "is_nifti_path", "read_nifti_trials"]

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti_path(path: str | os.PathLike) -> bool:
    """True when the file name ends in ``.nii`` or ``.nii.gz``."""
    return str(path).lower().endswith(NIFTI_SUFFIXES)


@dataclass
class NiftiTrials:
    """Masked per-trial maps.

    Attributes
    ----------
    X : ndarray of float32, shape (n_trials, n_voxels)
    voxel_indices : ndarray of int64, shape (n_voxels, 3)
        (i, j, k) of each column in the image grid.
    voxel_coords : ndarray of float64, shape (n_voxels, 3)
        World coordinates (mm) of each column, through the affine.
    affine : ndarray, shape (4, 4)
    voxel_labels : ndarray of int64 or None
        Atlas label of each column (atlas masking only).
    info : dict
        Volume shape, number of volumes, TR header fields.
    """

    X: np.ndarray
    voxel_indices: np.ndarray
    voxel_coords: np.ndarray
    affine: np.ndarray
    voxel_labels: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)


def _load(nib, path: Path, what: str):
    if not path.is_file():
        raise DataValidationError(f"{path}: no such file ({what})")
    try:
        return nib.load(str(path))
    except Exception as exc:  # nibabel raises ImageFileError, OSError, EOFError, ValueError, zlib errors...
        raise DataValidationError(f"{path}: cannot be read as a NIfTI image ({type(exc).__name__}: {exc})") from exc


def _time_unit(img) -> tuple[str, float]:
    try:
        unit = img.header.get_xyzt_units()[1]
    except Exception:  # noqa: BLE001 - headers of other formats
        unit = "unknown"
    zooms = img.header.get_zooms()
    return str(unit), float(zooms[3]) if len(zooms) > 3 else 0.0


def _check_grid(path: Path, img, ref_path: Path, ref_shape: tuple, ref_affine: np.ndarray, what: str) -> None:
    if tuple(img.shape[:3]) != tuple(ref_shape):
        raise DataValidationError(
            f"{path}: {what} has shape {tuple(img.shape[:3])} but the volumes of {ref_path} have {tuple(ref_shape)}; "
            "resample it to the data's grid (e.g. nilearn.image.resample_to_img(..., interpolation='nearest'))"
        )
    if not np.allclose(img.affine, ref_affine, atol=1e-3):
        raise DataValidationError(
            f"{path}: {what} has another affine than {ref_path} (same grid size, different position or voxel size); "
            "resample it to the data's grid"
        )


def read_nifti_trials(
    path: str | os.PathLike,
    *,
    mask: str | os.PathLike | None = None,
    atlas: str | os.PathLike | None = None,
    labels: Sequence[int] | None = None,
    n_trials: int | None = None,
    volumes: str = "auto",
) -> NiftiTrials:
    """Read a 4D NIfTI of per-trial maps and keep the voxels of a mask (or of atlas labels).

    Parameters
    ----------
    path : path-like
        4D image (x, y, z, trial); a 3D image is one trial.
    mask : path-like, optional
        3D mask on the same grid; non-zero voxels are kept.
    atlas, labels : optional
        A 3D integer label image on the same grid and the labels to keep
        (instead of ``mask``).
    n_trials : int, optional
        Number of trials the trial table lists; the image must have exactly
        that many volumes.
    volumes : {"auto", "trials"}
        ``"auto"`` refuses an image whose header gives a repetition time in
        seconds or milliseconds (a run, not per-trial maps) when there is no
        ``n_trials`` to compare; ``"trials"`` says the volumes are trials.

    Returns
    -------
    NiftiTrials

    Raises
    ------
    DataValidationError
        Missing or unreadable file, mask or atlas on another grid, an empty
        mask, labels absent from the atlas, non-finite values inside the
        mask, a count of volumes that is not the count of trials, or what
        looks like a raw time series.
    """
    nib = require("nibabel", f"reading {path}")
    path = Path(path)
    if volumes not in ("auto", "trials"):
        raise DataValidationError(f"{path}: volumes={volumes!r}; allowed: 'auto', 'trials'")
    if (mask is None) == (atlas is None):
        raise DataValidationError(
            f"{path}: give exactly one of a mask image and an atlas label image (with its labels) to choose the voxels"
        )
    img = _load(nib, path, "signals")
    if img.ndim not in (3, 4):
        raise DataValidationError(f"{path}: has {img.ndim} dimensions {img.shape}; expected a 4D image (x, y, z, trial)")
    n_vol = 1 if img.ndim == 3 else int(img.shape[3])
    unit, tr = _time_unit(img)
    info = {"volume_shape": list(img.shape[:3]), "n_volumes": n_vol, "time_unit": unit, "pixdim4": tr}
    if n_trials is not None and n_vol > n_trials:
        raise DataValidationError(
            f"{path}: has {n_vol} volumes but the trial table lists {n_trials} trials; this looks like a raw time "
            f"series (TR header {tr:g} {unit}), and CortexFlow needs one response map per trial: estimate them first "
            "(a GLM with one regressor per trial, e.g. nilearn FirstLevelModel or LSS) and give that 4D image"
        )
    if n_trials is not None and n_vol < n_trials:
        raise DataValidationError(f"{path}: has {n_vol} volumes but the trial table lists {n_trials} trials; they must match")
    if n_trials is None and volumes == "auto" and unit in ("sec", "msec", "usec") and tr > 0:
        raise DataValidationError(
            f"{path}: its header gives a repetition time ({tr:g} {unit}), as a raw fMRI run has; CortexFlow needs one "
            "response map per trial (estimate them first with a GLM), or, if these volumes are per-trial maps, give "
            "a trial table or set volumes = \"trials\" in [signals]"
        )
    shape3 = tuple(int(s) for s in img.shape[:3])
    voxel_labels = None
    if mask is not None:
        mpath = Path(mask)
        mimg = _load(nib, mpath, "mask")
        mdata = np.asanyarray(mimg.dataobj)
        if mdata.ndim == 4 and mdata.shape[3] == 1:
            mdata = mdata[..., 0]
        _check_grid(mpath, mimg, path, shape3, img.affine, "the mask")
        keep = mdata != 0
        if not keep.any():
            raise DataValidationError(f"{mpath}: the mask is empty (no non-zero voxel)")
    else:
        apath = Path(atlas)
        aimg = _load(nib, apath, "atlas")
        adata = np.asanyarray(aimg.dataobj)
        _check_grid(apath, aimg, path, shape3, img.affine, "the atlas")
        if adata.dtype.kind == "f" and not np.all(np.mod(adata, 1) == 0):
            raise DataValidationError(f"{apath}: the atlas holds non-integer values; expected integer labels")
        adata = adata.astype(np.int64)
        present = np.unique(adata)
        if not labels:
            raise DataValidationError(f"{apath}: give the atlas labels to keep (labels = [...]); present: "
                                      f"{[int(v) for v in present if v != 0][:50]}")
        absent = [int(v) for v in labels if int(v) not in set(present.tolist())]
        if absent:
            raise DataValidationError(f"{apath}: label(s) {absent} do not occur in the atlas; present: "
                                      f"{[int(v) for v in present if v != 0][:50]}")
        keep = np.isin(adata, np.asarray(labels, dtype=np.int64))
        voxel_labels = adata[keep]
    ijk = np.argwhere(keep).astype(np.int64)
    X = np.empty((n_vol, len(ijk)), dtype=np.float32)
    for t in range(n_vol):  # one volume at a time: never the whole 4D image as float64
        vol = np.asanyarray(img.dataobj[..., t]) if img.ndim == 4 else np.asanyarray(img.dataobj)
        X[t] = vol[keep]
    bad = ~np.isfinite(X)
    if bad.any():
        t, v = (int(i) for i in np.argwhere(bad)[0])
        raise DataValidationError(
            f"{path}: {int(bad.sum())} NaN or Inf value(s) inside the mask; first in volume {t} at voxel "
            f"{tuple(int(i) for i in ijk[v])}; shrink the mask or fill them"
        )
    coords = nib.affines.apply_affine(img.affine, ijk).astype(np.float64)
    return NiftiTrials(X=X, voxel_indices=ijk, voxel_coords=coords, affine=np.asarray(img.affine, dtype=np.float64),
                       voxel_labels=voxel_labels, info=info)
