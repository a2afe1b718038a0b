"""The rewrite passes. Each module registers its passes on import; the list here is explicit."""

from onnxslim.passes import cleanup, fold_bn, fold_constants, remove_identity  # noqa: F401
