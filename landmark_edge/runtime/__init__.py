"""Inference runtime: one :class:`Backend` interface for every engine, and the inference session over it
(:class:`~landmark_edge.runtime.pipeline.InferenceSession`) that every caller gets its finished results from."""
