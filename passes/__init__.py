"""The rewrite passes. Each module registers its passes on import; the list here is explicit."""

from onnxslim.passes import (  # noqa: F401
    cleanup,
    collapse_chains,
    cse,
    fold_affine,
    fold_bn,
    fold_constants,
    fuse_activations,
    fuse_gelu,
    fuse_pad,
    fuse_layernorm,
    prune_channels,
    prune_weights,
    quantize,
    remove_identity,
    remove_noops,
    reshape_targets,
    svd,
)
