"""The rewrite passes. Each module registers its passes on import; the lists here are explicit.

The exact passes (the default pipeline's) are imported with the package. The lossy ones pull in
the quantization, pruning and low-rank machinery, 95 ms of imports here that a default run never
uses, so each is imported when a pipeline names it or the passes are listed (``LAZY``, read by
``core.registry``).
"""

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
    remove_identity,
    remove_noops,
    reshape_targets,
)

#: pass name -> the module of onnxslim.passes that registers it, imported on first use
LAZY = {
    "prune-channels": "prune_channels",
    "prune-weights": "prune_weights",
    "quantize": "quantize",
    "svd": "svd",
}
