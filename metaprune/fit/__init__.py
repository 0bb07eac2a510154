"""Fit: regressors that learn the harvest target from per-weight features, saved in safe formats."""
