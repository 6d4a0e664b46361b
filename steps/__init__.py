"""One module per step of the architecture; importing this package registers them all."""

import importlib
import pkgutil

from .base import REGISTRY, Finding, Step, register

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_") and _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["REGISTRY", "Finding", "Step", "register"]
