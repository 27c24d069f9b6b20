"""Every reader of cortexflow.data.readers on small files the tests write (NumPy, SciPy, h5py, nibabel, MNE, Pillow)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import scipy.io

from cortexflow.data.eeg.registered import load_eeg, read_epochs_file
from cortexflow.data.loading import load_dataset
from cortexflow.data.readers import read_array, read_image_files, read_mne_epochs, read_nifti_trials
from cortexflow.data.readers._optional import require
from cortexflow.data.readers.arrays import is_mat73, list_keys
from cortexflow.exceptions import DataValidationError

h5py = pytest.importorskip("h5py")
nib = pytest.importorskip("nibabel")
Image = pytest.importorskip("PIL.Image")

RNG = np.random.default_rng(0)


def write_mat73(path, arrays: dict) -> None:
    """A MATLAB v7.3 file as MATLAB writes it: a 512-byte text header, then HDF5 with arrays stored transposed."""
    with h5py.File(path, "w", userblock_size=512) as f:
        for k, v in arrays.items():
            f.create_dataset(k, data=np.asarray(v).T)
            f[k].attrs["MATLAB_class"] = np.bytes_("double")
    with open(path, "r+b") as fh:
        fh.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Fri Dec  4 18:00:00 2026 HDF5 schema 1.00 .")


# ------------------------------------------------------------------- arrays
def test_npy_is_memory_mapped_and_refuses_a_key(tmp_path):
    a = RNG.normal(size=(6, 5)).astype(np.float32)
    np.save(tmp_path / "x.npy", a)
    out = read_array(tmp_path / "x.npy")
    assert isinstance(out, np.memmap) and np.array_equal(out, a)
    with pytest.raises(DataValidationError, match="holds one array; remove key 'x'"):
        read_array(tmp_path / "x.npy", "x")


def test_npz_and_mat_keys(tmp_path):
    a, b = RNG.normal(size=(4, 3)), RNG.normal(size=(4, 2))
    np.savez(tmp_path / "d.npz", a=a, b=b)
    scipy.io.savemat(tmp_path / "d.mat", {"a": a, "b": b})
    for name in ("d.npz", "d.mat"):
        assert np.array_equal(read_array(tmp_path / name, "b"), b)
        with pytest.raises(DataValidationError, match=r"no key 'c'; keys in the file: \['a', 'b'\]"):
            read_array(tmp_path / name, "c")
        with pytest.raises(DataValidationError, match="give the array to read with key"):
            read_array(tmp_path / name)


def test_hdf5_dataset_path_inside_the_file(tmp_path):
    a = RNG.normal(size=(7, 3)).astype(np.float32)
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f.create_dataset("session1/betas", data=a)
        f.create_dataset("session1/onsets", data=np.arange(7))
    assert np.array_equal(read_array(tmp_path / "d.h5", "session1/betas"), a)
    assert list_keys(tmp_path / "d.h5") == ["session1/betas", "session1/onsets"]
    with pytest.raises(DataValidationError, match="no dataset 'betas'; datasets in the file"):
        read_array(tmp_path / "d.h5", "betas")
    with pytest.raises(DataValidationError, match="is an HDF5 group, not a dataset"):
        read_array(tmp_path / "d.h5", "session1")


def test_mat73_is_transposed_back_to_matlab_shapes(tmp_path):
    a = RNG.normal(size=(5, 3))
    write_mat73(tmp_path / "v73.mat", {"fmri": a})
    assert is_mat73(tmp_path / "v73.mat")
    assert np.array_equal(read_array(tmp_path / "v73.mat", "fmri"), a)


def test_load_dataset_reads_the_four_keys_from_hdf5_and_mat73(tmp_path):
    arrays = {"fmriTrn": RNG.normal(size=(6, 4)), "fmriTest": RNG.normal(size=(2, 4)),
              "stimTrn": RNG.random((6, 784)), "stimTest": RNG.random((2, 784)),
              "labelTrn": np.arange(6.0), "labelTest": np.arange(2.0)}
    write_mat73(tmp_path / "v73.mat", arrays)
    with h5py.File(tmp_path / "d.hdf5", "w") as f:
        for k, v in arrays.items():
            f.create_dataset(k, data=v)
    for name in ("v73.mat", "d.hdf5"):
        ds = load_dataset(tmp_path / name)
        assert ds.X_train.shape == (6, 4) and ds.Y_test.shape == (2, 28, 28)
        assert np.allclose(ds.X_test, arrays["fmriTest"].astype(np.float32))
        assert np.array_equal(ds.Y_train.reshape(6, -1), arrays["stimTrn"].astype(np.float32))
        assert ds.labels_train.tolist() == list(range(6))


# -------------------------------------------------------------------- NIfTI
def _nifti(tmp_path, n=5, shape=(4, 5, 3), tr=None):
    data = RNG.normal(size=shape + (n,)).astype(np.float32)
    img = nib.Nifti1Image(data, np.diag([2.0, 2.0, 3.0, 1.0]))
    if tr is not None:
        img.header.set_xyzt_units("mm", "sec")
        img.header["pixdim"][4] = tr
    nib.save(img, str(tmp_path / "betas.nii.gz"))
    return data


def test_nifti_mask_keeps_voxels_in_c_order_with_coordinates(tmp_path):
    data = _nifti(tmp_path)
    mask = np.zeros((4, 5, 3), dtype=np.uint8)
    mask[1:3, 2:4, 1] = 1
    mask[3, 4, 2] = 7
    nib.save(nib.Nifti1Image(mask, np.diag([2.0, 2.0, 3.0, 1.0])), str(tmp_path / "mask.nii.gz"))
    nt = read_nifti_trials(tmp_path / "betas.nii.gz", mask=tmp_path / "mask.nii.gz", n_trials=5)
    assert nt.X.dtype == np.float32 and nt.X.shape == (5, 5)
    assert np.array_equal(nt.X, data[mask != 0].T)
    assert nt.voxel_indices.tolist()[0] == [1, 2, 1] and nt.voxel_indices.tolist()[-1] == [3, 4, 2]
    assert np.allclose(nt.voxel_coords[-1], [6.0, 8.0, 6.0])


def test_nifti_atlas_labels(tmp_path):
    data = _nifti(tmp_path)
    atlas = np.zeros((4, 5, 3), dtype=np.int16)
    atlas[0, :, 0] = 3
    atlas[2, 1, :] = 9
    nib.save(nib.Nifti1Image(atlas, np.diag([2.0, 2.0, 3.0, 1.0])), str(tmp_path / "atlas.nii.gz"))
    nt = read_nifti_trials(tmp_path / "betas.nii.gz", atlas=tmp_path / "atlas.nii.gz", labels=[9])
    assert np.array_equal(nt.X, data[atlas == 9].T) and set(nt.voxel_labels.tolist()) == {9}
    with pytest.raises(DataValidationError, match=r"label\(s\) \[4\] do not occur in the atlas; present: \[3, 9\]"):
        read_nifti_trials(tmp_path / "betas.nii.gz", atlas=tmp_path / "atlas.nii.gz", labels=[4])


def test_nifti_errors(tmp_path):
    _nifti(tmp_path, n=12)
    ok = np.diag([2.0, 2.0, 3.0, 1.0])
    nib.save(nib.Nifti1Image(np.ones((4, 5, 2), np.uint8), ok), str(tmp_path / "small.nii.gz"))
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 3), np.uint8), ok), str(tmp_path / "empty.nii.gz"))
    nib.save(nib.Nifti1Image(np.ones((4, 5, 3), np.uint8), ok), str(tmp_path / "mask.nii.gz"))
    betas = tmp_path / "betas.nii.gz"
    with pytest.raises(DataValidationError, match=r"has shape \(4, 5, 2\) but the volumes of .* have \(4, 5, 3\)"):
        read_nifti_trials(betas, mask=tmp_path / "small.nii.gz")
    with pytest.raises(DataValidationError, match="the mask is empty"):
        read_nifti_trials(betas, mask=tmp_path / "empty.nii.gz")
    with pytest.raises(DataValidationError, match="12 volumes but the trial table lists 4 trials; this looks like a raw"):
        read_nifti_trials(betas, mask=tmp_path / "mask.nii.gz", n_trials=4)
    with pytest.raises(DataValidationError, match="no such file"):
        read_nifti_trials(tmp_path / "nope.nii.gz", mask=tmp_path / "mask.nii.gz")


def test_nifti_with_a_repetition_time_is_refused_as_a_run(tmp_path):
    _nifti(tmp_path, n=6, tr=2.0)
    nib.save(nib.Nifti1Image(np.ones((4, 5, 3), np.uint8), np.diag([2.0, 2.0, 3.0, 1.0])), str(tmp_path / "m.nii.gz"))
    with pytest.raises(DataValidationError, match=r"repetition time \(2 sec\)"):
        read_nifti_trials(tmp_path / "betas.nii.gz", mask=tmp_path / "m.nii.gz")
    assert read_nifti_trials(tmp_path / "betas.nii.gz", mask=tmp_path / "m.nii.gz", volumes="trials").X.shape == (6, 60)
    assert read_nifti_trials(tmp_path / "betas.nii.gz", mask=tmp_path / "m.nii.gz", n_trials=6).X.shape == (6, 60)


# --------------------------------------------------------------------- MNE
def _epochs_file(tmp_path, n=8, name="sub01-epo.fif"):
    mne = pytest.importorskip("mne")
    data = RNG.normal(size=(n, 3, 40)).astype(np.float32) * 1e-5
    info = mne.create_info(["Fz", "Cz", "Pz"], 100.0, ch_types="eeg")
    events = np.column_stack([np.arange(n) * 100 + 7, np.zeros(n, int), np.tile([5, 2], n // 2)])
    ep = mne.EpochsArray(data.astype(np.float64), info, events=events, event_id={"face": 5, "house": 2}, tmin=-0.1,
                         verbose="error")
    ep.save(tmp_path / name, overwrite=True, verbose="error")
    return data, events


def test_mne_epochs_round_trip(tmp_path):
    data, events = _epochs_file(tmp_path)
    f = read_mne_epochs(tmp_path / "sub01-epo.fif")
    assert np.array_equal(f["data"], data)  # float32 survives MNE's single-precision fif exactly
    assert f["class_names"] == ("house", "face")  # ordered by event code (2, 5)
    assert f["labels"].tolist() == [1, 0] * 4 and f["event_ids"].tolist() == events[:, 0].tolist()
    assert f["sfreq"] == 100.0 and f["tmin"] == pytest.approx(-0.1)
    ep = read_epochs_file(tmp_path / "sub01-epo.fif", picks=["Pz", "Fz"])
    assert ep.ch_names == ("Pz", "Fz") and np.array_equal(ep.data, data[:, [2, 0]])
    with pytest.raises(DataValidationError, match=r"channel\(s\) \['O1'\] not in the file"):
        read_mne_epochs(tmp_path / "sub01-epo.fif", picks=["O1"])


def test_load_eeg_reads_epo_fif_by_path(tmp_path):
    data, _ = _epochs_file(tmp_path)
    ep = load_eeg(tmp_path / "sub01-epo.fif")
    assert ep.metadata["name"] == "sub01" and ep.n_epochs == 8 and np.array_equal(ep.data, data)
    (tmp_path / "bad-epo.fif").write_bytes(b"not a fif file at all")
    with pytest.raises(DataValidationError, match="cannot be read as MNE epochs"):
        load_eeg(tmp_path / "bad-epo.fif")


# ------------------------------------------------------------------ images
def test_png_folder_gray_is_exact_and_rgb_keeps_channels(tmp_path):
    g = RNG.integers(0, 256, size=(3, 20, 16), dtype=np.uint8)
    c = RNG.integers(0, 256, size=(2, 20, 16, 3), dtype=np.uint8)
    for i, a in enumerate(g):
        Image.fromarray(a, mode="L").save(tmp_path / f"g{i}.png")
    for i, a in enumerate(c):
        Image.fromarray(a, mode="RGB").save(tmp_path / f"c{i}.png")
    out = read_image_files([tmp_path / f"g{i}.png" for i in range(3)])
    assert out.shape == (3, 20, 16) and np.array_equal(out, g.astype(np.float32) / np.float32(255))
    out = read_image_files([tmp_path / f"c{i}.png" for i in range(2)])
    assert out.shape == (2, 20, 16, 3) and np.array_equal(out, c.astype(np.float32) / np.float32(255))
    gray = read_image_files([tmp_path / "c0.png"], color="grayscale")
    assert gray.shape == (1, 20, 16)
    with pytest.raises(DataValidationError, match="grayscale and RGB images are mixed"):
        read_image_files([tmp_path / "g0.png", tmp_path / "c0.png"])
    mixed = read_image_files([tmp_path / "g0.png", tmp_path / "c0.png"], color="rgb")
    assert mixed.shape == (2, 20, 16, 3)


def test_images_are_resized_to_the_declared_size_and_big_ones_refused(tmp_path):
    big = RNG.integers(0, 256, size=(300, 280), dtype=np.uint8)
    Image.fromarray(big).save(tmp_path / "big.png")
    Image.fromarray(big[:64, :64]).convert("RGB").save(tmp_path / "photo.jpg", quality=95)
    with pytest.raises(DataValidationError, match="is 300x280 px; images must be 8..256 px per side"):
        read_image_files([tmp_path / "big.png"])
    out = read_image_files([tmp_path / "big.png"], size=(32, 30))
    assert out.shape == (1, 32, 30) and 0 <= out.min() and out.max() <= 1
    with pytest.raises(DataValidationError, match="image size 512x512 is outside 8..256"):
        read_image_files([tmp_path / "big.png"], size=(512, 512))
    jpg = read_image_files([tmp_path / "photo.jpg"], size=(64, 64))
    assert jpg.shape == (1, 64, 64, 3)
    with pytest.raises(DataValidationError, match="does not exist"):
        read_image_files([tmp_path / "nope.png"])


def test_a_missing_optional_library_names_the_extra(monkeypatch):
    for module, extra in (("nibabel", "nifti"), ("h5py", "hdf5"), ("PIL", "images"), ("mne", "eeg")):
        monkeypatch.setitem(sys.modules, module, None)  # import then raises ImportError
        with pytest.raises(ImportError, match=rf"pip install 'cortexflow\[{extra}\]'"):
            require(module, "reading x")
