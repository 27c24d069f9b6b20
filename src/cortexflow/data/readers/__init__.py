"""Readers of the file formats researchers keep their data in, one small module per format.

* :mod:`~cortexflow.data.readers.arrays`: ``.npy`` (memory-mapped), ``.npz``,
  ``.mat`` (v4-7.2 with SciPy, v7.3 with h5py) and HDF5 (a dataset path inside
  the file, read lazily with h5py);
* :mod:`~cortexflow.data.readers.nifti`: a 4D NIfTI of per-trial response maps
  masked by a mask image or an atlas label image (nibabel);
* :mod:`~cortexflow.data.readers.mne_epochs`: MNE epochs (``-epo.fif``) into
  the fields of :class:`~cortexflow.data.eeg.epochs.EEGEpochs`;
* :mod:`~cortexflow.data.readers.images`: a folder of PNG/JPEG images (Pillow).

Optional libraries are imported only when a reader runs; a missing one gives
an ImportError naming the extra (``pip install 'cortexflow[nifti]'``,
``[hdf5]``, ``[images]``, ``[eeg]``). :mod:`cortexflow.data.spec` combines the
readers into a :class:`~cortexflow.data.loading.BrainDataset`.
"""

from cortexflow.data.readers.arrays import ARRAY_SUFFIXES, is_hdf5, list_keys, read_array
from cortexflow.data.readers.images import IMAGE_SUFFIXES, MAX_IMAGE_SIZE, read_image_files
from cortexflow.data.readers.mne_epochs import is_mne_epochs_path, read_mne_epochs
from cortexflow.data.readers.nifti import NIFTI_SUFFIXES, is_nifti_path, read_nifti_trials

__all__ = [
    "ARRAY_SUFFIXES",
    "IMAGE_SUFFIXES",
    "MAX_IMAGE_SIZE",
    "NIFTI_SUFFIXES",
    "is_hdf5",
    "is_mne_epochs_path",
    "is_nifti_path",
    "list_keys",
    "read_array",
    "read_image_files",
    "read_mne_epochs",
    "read_nifti_trials",
]
