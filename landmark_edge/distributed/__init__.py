"""Executors that spread the inference session over machines (Ray): ``infer --executor ray``."""
