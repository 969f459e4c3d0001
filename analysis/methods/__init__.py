"""The method registry: one module per method, each exposing ``METHOD``.

Adding a method = adding a module here that defines a :class:`~prunelens.analysis.methods.base.Method`
with its declared parameters, and listing it in ``_MODULES``. The CLI, the store and every
dashboard page pick it up from :func:`all_methods`.
"""

from __future__ import annotations

import importlib
import threading

from prunelens.analysis.errors import ParamError
from prunelens.analysis.methods.base import UNITS, Method, Param

_MODULES = ("michel", "ablation", "magnitude", "random_scores", "admm", "admm_quant", "smp", "smp_pruner", "pins",
            "platon", "snip")

_REGISTRY: dict[str, Method] = {}
_REGISTRY_LOCK = threading.Lock()


def all_methods() -> dict[str, Method]:
    if not _REGISTRY:
        # filled once, whole: dashboard sessions (threads) must never see a half-filled registry
        with _REGISTRY_LOCK:
            if not _REGISTRY:
                found: dict[str, Method] = {}
                for module in _MODULES:
                    try:
                        method = importlib.import_module(f"{__name__}.{module}").METHOD
                    except ModuleNotFoundError as exc:
                        if exc.name == f"{__name__}.{module}":
                            continue  # a method still being written is simply absent
                        raise
                    found[method.name] = method
                _REGISTRY.update(found)
    return _REGISTRY


def get_method(name: str) -> Method:
    methods = all_methods()
    if name not in methods:
        raise ParamError(f"unknown method '{name}' (choose one of: {', '.join(methods)})")
    return methods[name]


__all__ = ["UNITS", "Method", "Param", "all_methods", "get_method"]
