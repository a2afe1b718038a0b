"""Exception hierarchy.

The CLI maps ``UsageError`` (and its subclasses) to exit code 2 and ``ParityError`` to exit
code 1, printing only the one-line message. Library code raises these; it never exits or prints.
"""

from __future__ import annotations


class OnnxSlimError(Exception):
    """Base class of every error onnxslim raises on purpose."""


class UsageError(OnnxSlimError):
    """Bad input or usage: missing file, not ONNX, bad option, bad data. CLI exit code 2."""


class ModelLoadError(UsageError):
    """The model file is missing, unreadable, truncated, not ONNX or rejected by the checker."""


class OptionError(UsageError):
    """An unknown, mistyped or out-of-range pass option, or a malformed pipeline."""

    def __init__(self, pass_name: str, option: str | None, message: str) -> None:
        where = f"{pass_name}: option {option!r}" if option else pass_name
        super().__init__(f"{where}: {message}")
        self.pass_name = pass_name
        self.option = option


class DataError(UsageError):
    """A --data / --calibration-data source that does not fit the model."""


class PassError(OnnxSlimError):
    """A pass failed unexpectedly; the message names the pass and its place in the pipeline."""


class VerificationError(OnnxSlimError):
    """The graph a pass produced is structurally invalid or rejected by onnx.checker."""


class ParityError(OnnxSlimError):
    """The result does not match the original within the tolerance. CLI exit code 1."""


class UnsupportedModelError(UsageError):
    """The model uses something a pass cannot handle and cannot decline around. CLI exit code 2."""
