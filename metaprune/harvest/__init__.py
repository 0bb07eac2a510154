"""Harvest: the per-weight meta-dataset (features and iterative-SynFlow targets) in a Zarr store."""
