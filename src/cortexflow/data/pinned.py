"""One pinned public file: where it lives (repository, commit, path), its sha256 and its size.

The data sets (:class:`cortexflow.data.registry.DatasetInfo`) and the files of
the image corpora (:mod:`cortexflow.data.corpora`) are both pinned this way;
:func:`cortexflow.data.fetch.ensure_pinned_file` verifies and downloads them.

>>> f = PinnedFile("a.gz", "owner/repo", "0" * 40, "data/a.gz", "f" * 64, 10)
>>> f.url
'https://raw.githubusercontent.com/owner/repo/0000000000000000000000000000000000000000/data/a.gz'
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["PinnedFile", "RAW_URL"]

#: Public URL of a file of a GitHub repository at a commit.
RAW_URL = "https://raw.githubusercontent.com/{repository}/{commit}/{path}"


@dataclass(frozen=True)
class PinnedFile:
    """One public file pinned to a commit and a checksum.

    Attributes
    ----------
    filename : str
        Name of the local copy inside its data sub-folder.
    repository, commit, source_path : str
        Where the public file lives (``owner/name``, a commit, the path in the
        repository); :attr:`url` is built from them.
    sha256 : str
        Expected checksum of the file.
    size_bytes : int
        Expected size of the file.
    """

    filename: str
    repository: str
    commit: str
    source_path: str
    sha256: str
    size_bytes: int

    @property
    def url(self) -> str:
        """Public URL of the file, pinned to a commit."""
        return RAW_URL.format(repository=self.repository, commit=self.commit, path=self.source_path)

    def to_dict(self) -> dict:
        """JSON-serialisable dict (with ``url``)."""
        return {**asdict(self), "url": self.url}
