"""The old import path of the checkpoint format: ``ddpmkit.checkpoint`` is
:mod:`ddpmkit.io.checkpoint` (moved there when the package was regrouped); prefer
``ddpmkit.load_run`` to load a run."""
from .io.checkpoint import *  # noqa: F401,F403
from .io.checkpoint import __all__  # noqa: F401
