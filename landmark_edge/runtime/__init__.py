"""Inference runtime: one :class:`Backend` interface for every engine, and the batched pipeline over it."""
