"""Small shared utilities (atomic file writes, hashing, progress, seeding)."""

from cortexflow.utils.io import atomic_write_bytes, atomic_write_json, atomic_write_text, sha256_file

__all__ = ["atomic_write_bytes", "atomic_write_json", "atomic_write_text", "sha256_file"]
