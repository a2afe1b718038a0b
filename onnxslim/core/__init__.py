"""The pass infrastructure: pass base class, registry, pipeline text and the pass manager."""
