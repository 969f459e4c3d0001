"""The method registry: one module per method, each exposing ``METHOD``.

Adding a method = adding a module here that defines a :class:`~prunelens.analysis.methods.base.Method`
with its declared parameters, and listing it in ``_MODULES``; or, without editing prunelens, an
installed package's entry point in the ``prunelens.methods`` group (:mod:`prunelens.analysis.plugins`,
docs/PLUGINS.md). The CLI, the store and every dashboard page pick both up from :func:`all_methods`.
"""

from __future__ import annotations

import importlib
import threading

from prunelens.analysis.errors import ParamError
from prunelens.analysis.methods.base import UNITS, Method, Param
from prunelens.analysis.session import set_training_split_rule

_MODULES = ("michel", "ablation", "magnitude", "random_scores", "admm", "admm_quant", "smp", "smp_pruner", "pins",
            "platon", "snip")

_REGISTRY: dict[str, Method] = {}
_REGISTRY_LOCK = threading.RLock()
_filling: dict[str, Method] | None = None  # the registry being filled, seen by its own thread only


def all_methods() -> dict[str, Method]:
    global _filling
    if not _REGISTRY:
        # filled once, whole: dashboard sessions (threads) must never see a half-filled registry
        with _REGISTRY_LOCK:
            if _filling is not None:  # a plug-in asking for a method while it is imported
                return _filling  # the built-in methods (this thread holds the lock)
            if not _REGISTRY:
                found: dict[str, Method] = {}
                _filling = found
                try:
                    for module in _MODULES:
                        try:
                            method = importlib.import_module(f"{__name__}.{module}").METHOD
                        except ModuleNotFoundError as exc:
                            if exc.name == f"{__name__}.{module}":
                                continue  # a method still being written is simply absent
                            raise
                        found[method.name] = method
                    found.update(_plugin_methods(set(found)))
                finally:
                    _filling = None
                _REGISTRY.update(found)
    return _REGISTRY


def _plugin_methods(taken: set[str]) -> dict[str, Method]:
    """Methods of installed plug-ins (entry points in ``prunelens.methods``), after the built-in ones."""
    from prunelens.analysis.plugins import METHODS_GROUP, load_group

    def refuse(name: str, obj) -> str | None:
        if not isinstance(obj, Method):
            return f"it names a {type(obj).__name__}, not a prunelens Method instance"
        if obj.name != name:
            return f"the entry point is called '{name}' but the method '{obj.name}'"
        return None

    return load_group(METHODS_GROUP, refuse, taken)  # type: ignore[return-value]


def get_method(name: str) -> Method:
    methods = all_methods()
    if name not in methods:
        raise ParamError(f"unknown method '{name}' (choose one of: {', '.join(methods)})")
    return methods[name]


def reads_training_split(name: str, params: dict) -> bool:
    """Whether method ``name``'s scores with ``params`` come from the training split alone (the
    session keys them by that split: :meth:`Session.keys <prunelens.analysis.session.Session.keys>`)."""
    return get_method(name).reads_training_split(params)


set_training_split_rule(reads_training_split)

__all__ = ["UNITS", "Method", "Param", "all_methods", "get_method"]
