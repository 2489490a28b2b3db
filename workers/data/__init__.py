"""Datasets: synthetic, scikit-learn, LIBSVM and image folders, and their per-worker shards."""
