"""Registry of the datasets of the CCCV1 design.

Each entry pins the public file to a commit and a sha256, and states what the
file is good for. ``register_dataset`` adds a user's own entry.
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass, field, replace
from typing import Iterable, Literal

from cortexflow.data.pinned import PinnedFile
from cortexflow.exceptions import ConfigError

__all__ = ["DatasetInfo", "DATASETS", "get_dataset_info", "list_datasets", "register_dataset", "did_you_mean"]

@dataclass(frozen=True)
class DatasetInfo:
    """Static description of one registered dataset.

    Attributes
    ----------
    name : str
        Registry key, also the sub-folder of the data directory.
    modality : str
        ``"fmri"``, ``"eeg-translated"`` (a .mat dataset file) or
        ``"eeg-raw"`` (a raw EEG recording, read by :mod:`cortexflow.data.eeg`,
        not by ``load_dataset``).
    filename : str
        File name inside ``<data_dir>/<folder>/``.
    repository, commit, source_path, sha256, size_bytes : str, str, str, str, int
        The pinned public file (see :class:`~cortexflow.data.pinned.PinnedFile`,
        which :attr:`file` returns): where it lives, its checksum and its size.
    pixel_order : {"C", "F"}
        Memory order of the 784 stimulus values (``"F"`` = column-major);
        not used for ``"eeg-raw"`` (its targets are class images).
    stimulus_scale : float
        Value that stands for white (255 for uint8 files, 1 for 0/1 floats);
        not used for ``"eeg-raw"``.
    n_train, n_test, n_features : int
        Shapes of the official split. For ``"eeg-raw"``: the number of
        trials, 0 (no official split), and the values per trial
        (``n_channels`` times the samples per channel).
    description, citation, licence : str
        Human-readable text.
    caveats : tuple of str
        Known defects and limits; shown by ``cortexflow datasets info``.
    format_tests_only : bool
        True when the file must not be used for quality claims.
    folder : str
        Sub-folder of the data directory that holds the file; empty means
        ``name``.
    n_channels : int or None
        EEG channels (``"eeg-raw"`` only).
    sfreq : float or None
        Sampling rate in Hz (``"eeg-raw"`` only).
    image_shape : tuple of int
        Shape of one stimulus as the file stores it (its flat rows are
        reshaped to it with ``pixel_order``): ``(28, 28)`` for every file here.
    native_shape : tuple of int or None
        When set, the stored images are exact nearest-neighbour upscalings
        of a grid of this shape (:mod:`cortexflow.data.grids`), and
        ``load_dataset`` returns that grid, refusing the file if any image
        does not round-trip exactly.
    """

    name: str
    modality: Literal["fmri", "eeg-translated", "eeg-raw"]
    filename: str
    repository: str
    commit: str
    source_path: str
    sha256: str
    size_bytes: int
    pixel_order: Literal["C", "F"]
    stimulus_scale: float
    n_train: int
    n_test: int
    n_features: int
    description: str
    citation: str
    licence: str
    caveats: tuple[str, ...] = field(default_factory=tuple)
    format_tests_only: bool = False
    folder: str = ""
    n_channels: int | None = None
    sfreq: float | None = None
    image_shape: tuple[int, ...] = (28, 28)
    native_shape: tuple[int, ...] | None = None

    @property
    def directory(self) -> str:
        """Sub-folder of the data directory that holds the file (``folder``, else ``name``)."""
        return self.folder or self.name

    @property
    def file(self) -> PinnedFile:
        """The dataset's file as a :class:`~cortexflow.data.pinned.PinnedFile` (what fetching verifies)."""
        return PinnedFile(self.filename, self.repository, self.commit, self.source_path, self.sha256,
                          self.size_bytes)

    @property
    def url(self) -> str:
        """Public URL of the file, pinned to a commit."""
        return self.file.url

    def to_dict(self) -> dict:
        """Return a JSON-serialisable dict (with ``url``)."""
        d = asdict(self)
        d["caveats"] = list(self.caveats)
        d["image_shape"] = list(self.image_shape)
        d["native_shape"] = None if self.native_shape is None else list(self.native_shape)
        d["url"] = self.url
        return d


DATASETS: dict[str, DatasetInfo] = {}


def register_dataset(info: DatasetInfo, *, overwrite: bool = False) -> DatasetInfo:
    """Add ``info`` to the registry under ``info.name``."""
    if info.name in DATASETS and not overwrite:
        raise ConfigError(f"dataset {info.name!r} is already registered; pass overwrite=True to replace it")
    DATASETS[info.name] = info
    return info


def list_datasets() -> list[str]:
    """Names of the registered datasets, sorted."""
    return sorted(DATASETS)


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """``" (did you mean X?)"`` for the closest of ``choices`` to ``name``, or ``""`` when none is close."""
    lowered = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(str(name).lower(), list(lowered), n=1, cutoff=0.6)
    return f" (did you mean {lowered[close[0]]}?)" if close else ""


def get_dataset_info(name: str) -> DatasetInfo:
    """Return the registry entry ``name`` or raise a clear error (with a close-name suggestion)."""
    try:
        return DATASETS[name]
    except (KeyError, TypeError):
        raise ConfigError(
            f"unknown dataset {name!r}{did_you_mean(name, DATASETS)}; registered datasets: "
            f"{', '.join(list_datasets())}"
        ) from None


register_dataset(
    DatasetInfo(
        name="vangerven",
        modality="fmri",
        filename="digit69_28x28.mat",
        repository="ChangdeDu/DGMM",
        commit="286503c79b010fd285065da7092ca43f873c1f58",
        source_path="digit69_28x28.mat",
        sha256="44513e09ad2398566aedd550088b817a3c0bf9cd7873f87078ecd7fdf170b22d",
        size_bytes=2390173,
        pixel_order="F",
        stimulus_scale=255.0,
        n_train=90,
        n_test=10,
        n_features=3092,
        description="Handwritten digits 6 and 9 ('digit69'); fMRI voxels of V1-V3. Labels: 1 = six, 2 = nine.",
        citation=(
            "van Gerven, M. A. J., de Lange, F. P., Heskes, T. (2010). Neural decoding with hierarchical "
            "generative models. Neural Computation 22(12). Data: Donders Institute; file as distributed "
            "with Du et al. (DGMM)."
        ),
        licence="no licence file in the source repository; cite the original data set",
        caveats=("every stimulus is unique: the official test split holds 10 images never seen in training",),
    )
)

register_dataset(
    DatasetInfo(
        name="miyawaki",
        modality="fmri",
        filename="miyawaki_structured_28x28.mat",
        repository="braindecoding/prepromiyawaki",
        commit="a17467afaed6454858916ba34678856b95e67c52",
        source_path="data/miyawaki_conditions_2to5_combined_sharp.mat",
        sha256="3ae3d618d919cf51ccc2649f60362400b44b87014e0c42afb31a74d5cb60e31e",
        size_bytes=1669816,
        pixel_order="F",
        stimulus_scale=1.0,
        n_train=107,
        n_test=12,
        n_features=967,
        description="10x10 binary geometric and letter patterns upscaled to 28x28; fMRI voxels. Labels = condition 2..5.",
        citation=(
            "Miyawaki, Y. et al. (2008). Visual image reconstruction from human brain activity using a "
            "combination of multiscale local image decoders. Neuron 60(5), 915-929."
        ),
        licence="GPL-3.0 (repository); original data: Miyawaki et al. 2008",
        caveats=(
            "only 20 unique images: all 12 official test images also appear in training (other trials), "
            "so the official split measures recognition of seen images; use the novel-stimulus split for "
            "generalisation",
            "the fMRI was z-scored over all trials before the split (a leak in the source file that "
            "CortexFlow cannot undo)",
        ),
    )
)

#: miyawaki at its native resolution: the same file, each 28 x 28 stimulus turned back into the 10 x 10 binary
#: pattern it upscales (exact on all 119 trials; see cortexflow.data.grids).
register_dataset(replace(
    DATASETS["miyawaki"],
    name="miyawaki-10x10",
    folder="miyawaki",
    native_shape=(10, 10),
    description="miyawaki's 10x10 binary geometric and letter patterns at their native resolution (the 28x28 "
                "stimuli of the file, each turned back into its exact 10x10 grid); fMRI voxels. Labels = condition 2..5.",
))

register_dataset(
    DatasetInfo(
        name="crell",
        modality="eeg-translated",
        filename="crell_translated_subset.mat",
        repository="braindecoding/eeg2fmri",
        commit="f9a22a4fd4ba627832af42199ce71f2b156392b2",
        source_path="cortexflow_data/crell.mat",
        sha256="2246106d4159c32a0921c63576b6efdf1d7048ee7ae8b72895a5d49a0d758f47",
        size_bytes=1277168,
        pixel_order="C",
        stimulus_scale=255.0,
        n_train=40,
        n_test=10,
        n_features=3092,
        description=(
            "EEG of letters (a d e f j n o s t v) translated into 3092-dim fMRI-like vectors by a "
            "translation model; a public 40/10 subset."
        ),
        citation=(
            "Crell, M. R., Mueller-Putz, G. R. (2024). Handwritten character classification from EEG "
            "through continuous kinematic decoding. BNCI 2024-001."
        ),
        licence="MIT (repository); raw EEG CC-BY-4.0",
        caveats=(
            "a subset: the full translated file (576/64) is not public",
            "the signal carries no class information (nearest centroid 0/10): for format and pipeline "
            "tests only, never for quality claims",
        ),
        format_tests_only=True,
    )
)

register_dataset(
    DatasetInfo(
        name="mindbigdata",
        modality="eeg-translated",
        filename="mindbigdata_translated_subset.mat",
        repository="braindecoding/eeg2fmri",
        commit="f9a22a4fd4ba627832af42199ce71f2b156392b2",
        source_path="cortexflow_data/mindbigdata.mat",
        sha256="49762f39c10e8355c3c8b4d638bc2b2ba75f5ee267c32837071b51ef3ab6004c",
        size_bytes=1277176,
        pixel_order="C",
        stimulus_scale=255.0,
        n_train=40,
        n_test=10,
        n_features=3092,
        description=(
            "MindBigData EEG of digits 0-9 translated into 3092-dim fMRI-like vectors; a public 40/10 subset."
        ),
        citation="Vivancos, D., Cuesta, F. (2022). MindBigData 2022: A large dataset of brain signals. arXiv:2212.14746.",
        licence="MIT (repository); raw EEG: MindBigData open database",
        caveats=(
            "a subset: the full translated file (1080/120) is not public",
            "broken at its source: every one of the 50 signal rows is the same vector; loading refuses it "
            "unless allow_degenerate=True (format tests only)",
        ),
        format_tests_only=True,
    )
)

register_dataset(
    DatasetInfo(
        name="mindbigdata-mw-sample",
        modality="eeg-raw",
        filename="MW-sample.csv",
        folder="mindbigdata_raw",
        repository="alik604/bioMedical-imaging",
        commit="c22a1e1994bde333da93483e9d4961f09912368c",
        source_path="MW-sample.csv",
        sha256="e7b877a6fab7baafd1e6e35551ebecb8e7c141080ee8f063a84c67cb943ec785",
        size_bytes=512726,
        pixel_order="C",
        stimulus_scale=255.0,
        n_train=174,
        n_test=0,
        n_features=952,
        n_channels=1,
        sfreq=512.0,
        description=(
            "174 real MindBigData recordings (NeuroSky MindWave, one channel FP1, ~512 Hz, digits 0-9) of one "
            "person, in a spreadsheet export of the raw text format; read with `cortexflow eeg` or read_mindbigdata."
        ),
        citation="Vivancos, D., Cuesta, F. (2022). MindBigData 2022: A large dataset of brain signals. arXiv:2212.14746.",
        licence="Database Contents License (DbCL) v1.0 (stated in the source repository's README for the data)",
        caveats=(
            "a spreadsheet export of the first 200 lines of MindBigData-MW: every signal is cut to 952 values "
            "although its [size] field says 952..1017 (read_mindbigdata reports it)",
            "one frontal channel of a consumer headset: expect little or no digit information",
            "class counts 0:24 1:18 2:17 3:15 4:21 5:19 6:7 7:12 8:20 9:21; no official train/test split",
        ),
    )
)
