"""Exception types raised by CortexFlow."""

from __future__ import annotations


class CortexFlowError(Exception):
    """Base class of every error that CortexFlow raises on purpose."""


class DataValidationError(CortexFlowError, ValueError):
    """A data file or array is unusable: missing key, wrong shape, NaN, ...

    The message always names the file (or ``<array>``), the key and the
    offending value, so that a user can find and fix the problem.
    """


class ChecksumError(CortexFlowError, OSError):
    """A downloaded or cached file does not match its expected sha256."""


class CheckpointError(CortexFlowError, ValueError):
    """A checkpoint is missing, corrupt, or incompatible with the data."""


class ConfigError(CortexFlowError, ValueError):
    """A configuration value is unknown or out of range."""
