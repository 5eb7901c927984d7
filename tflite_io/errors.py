"""Domain errors of the tflite_io layer. Each carries the offending values."""

from __future__ import annotations

__all__ = [
    "RespectPassError",
    "ModelFormatError",
    "UnsupportedModelError",
    "StageMapError",
    "OutputError",
    "VerificationError",
]


class RespectPassError(Exception):
    """Base of every error a user can cause; the CLI prints it as one line."""


class _ModelFileError(RespectPassError):
    """An error about one model file: its path and the reason."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class ModelFormatError(_ModelFileError):
    """The file is missing, unreadable, not a TFLite flatbuffer, truncated or corrupt."""


class UnsupportedModelError(_ModelFileError):
    """A valid TFLite model that respect-pass cannot partition (float, dynamic, custom ops...)."""


class StageMapError(RespectPassError):
    """A stage map that is not a valid K-stage pipeline of the graph."""

    def __init__(self, reason: str, num_stages: int | None = None) -> None:
        self.reason = reason
        self.num_stages = num_stages
        super().__init__(f"invalid stage map: {reason}")


class OutputError(RespectPassError):
    """The output directory cannot be created or written."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"cannot write output directory {path}: {reason}")


class VerificationError(RespectPassError):
    """Chained segments do not reproduce the full model bit for bit."""

    def __init__(self, mismatches: list[str]) -> None:
        self.mismatches = mismatches
        more = f" (and {len(mismatches) - 1} more)" if len(mismatches) > 1 else ""
        super().__init__(f"segments are not bit-exact with the model: {mismatches[0]}{more}")
