"""Weight sparsity internals: importance criteria, N:M masks, reconstruction, sparse storage."""
