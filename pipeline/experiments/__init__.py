"""Few-shot experiments: sweeps of methods x training fractions x seeds over a bundle, and their result tables."""
