"""Low-rank factorization internals: rank selection, whitening."""
