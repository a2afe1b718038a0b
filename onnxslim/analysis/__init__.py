"""Graph analyses that produce plans: channel dependency groups and their rules."""
