"""Load k-diffusion's ``sampling.py`` (and the ``utils.py`` it imports) without its package.

k-diffusion's package ``__init__`` imports torchvision, kornia, clean-fid and more, none of which
the samplers need; ``sampling.py`` needs scipy, torch, torchdiffeq, torchsde, tqdm and
``utils.py``, which imports torchvision's ``transforms.functional`` for its image helpers alone.
So the two files are loaded from the installed distribution under a private package name, with
a stand-in for torchvision only while ``utils.py`` loads when torchvision is not installed.

Install the peer (a test extra):
``pip install --no-deps k-diffusion==0.1.1.post1 torchsde trampoline`` (torchdiffeq: a dependency).
"""
from __future__ import annotations

import importlib.util
import os
import sys
import types

PACKAGE = "_kdiffusion_peer"
_TORCHVISION_STUBS = ("torchvision", "torchvision.transforms", "torchvision.transforms.functional")


def kdiffusion_dir() -> str | None:
    """The installed ``k_diffusion`` folder (found without importing the package), or None."""
    try:
        spec = importlib.util.find_spec("k_diffusion")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = list(spec.submodule_search_locations)[0]
    return folder if os.path.isfile(os.path.join(folder, "sampling.py")) else None


def _load(name: str, path: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(f"{PACKAGE}.{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _stub_torchvision() -> list[str]:
    """Insert empty torchvision modules (only if torchvision is missing); returns the names added."""
    if importlib.util.find_spec("torchvision") is not None:
        return []
    added = []
    for name in _TORCHVISION_STUBS:
        if name not in sys.modules:
            sys.modules[name] = types.ModuleType(name)
            added.append(name)
    sys.modules["torchvision"].transforms = sys.modules["torchvision.transforms"]
    sys.modules["torchvision.transforms"].functional = sys.modules["torchvision.transforms.functional"]
    return added


def load_sampling() -> types.ModuleType:
    """k-diffusion's ``sampling`` module; ImportError when k-diffusion (or a sampler dependency) is missing."""
    if f"{PACKAGE}.sampling" in sys.modules:
        return sys.modules[f"{PACKAGE}.sampling"]
    folder = kdiffusion_dir()
    if folder is None:
        raise ImportError("k-diffusion is not installed (pip install --no-deps k-diffusion==0.1.1.post1 torchsde trampoline)")
    for dependency in ("scipy", "torchdiffeq", "torchsde", "tqdm"):
        if importlib.util.find_spec(dependency) is None:
            raise ImportError(f"k-diffusion's sampling.py needs {dependency}, which is not installed")
    package = types.ModuleType(PACKAGE)
    package.__path__ = [folder]
    sys.modules[PACKAGE] = package
    added = _stub_torchvision()
    try:
        package.utils = _load("utils", os.path.join(folder, "utils.py"))
        package.sampling = _load("sampling", os.path.join(folder, "sampling.py"))
    except Exception:
        for name in (PACKAGE, f"{PACKAGE}.utils", f"{PACKAGE}.sampling"):
            sys.modules.pop(name, None)
        raise
    finally:
        for name in added:
            sys.modules.pop(name, None)
    return package.sampling
