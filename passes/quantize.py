"""Placeholder: the pass is being written."""
