"""Jobs that run the inference session on an existing distributed engine (Ray)."""
