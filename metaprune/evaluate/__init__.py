"""Evaluate: train and compare the tickets of many methods with paired statistics."""
