"""A node lost mid-run, injected by tests/test_distributed_ray.py: the executor carries no test hook of its own.

Ray actors import this module by name (the test puts tests/ on the workers' PYTHONPATH before the cluster starts).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from landmark_edge.runtime.backend import Backend


def crash_once(marker: str, make_backend: Callable[[], Backend]) -> Backend:
    """``make_backend()``'s backend, except that the first actor to find ``marker`` on a batch deletes it and
    kills its own process (only one actor can delete it, so only that one dies), as a lost node does."""
    backend = make_backend()
    run = backend.run

    def run_or_die(pixels, **keywords):
        try:
            os.remove(marker)
        except FileNotFoundError:
            return run(pixels, **keywords)
        os._exit(1)

    backend.run = run_or_die
    return backend
