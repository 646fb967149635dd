"""The old import path of the checkpoint format: ``ddpmkit.checkpoint`` is
:mod:`ddpmkit.io.checkpoint` (moved there when the package was regrouped) plus
:func:`load_checkpoint` (now :mod:`ddpmkit.training.restore`); prefer ``ddpmkit.load_run`` to
load a run."""
from .io.checkpoint import *  # noqa: F401,F403
from .io.checkpoint import __all__ as _format_names
from .training.restore import LoadedCheckpoint, load_checkpoint  # noqa: F401

__all__ = [*_format_names, "LoadedCheckpoint", "load_checkpoint"]
