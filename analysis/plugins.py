"""Plug-ins from installed packages, found through entry points (docs/PLUGINS.md).

An installed distribution can add

- methods, in the group :data:`METHODS_GROUP` (``prunelens.methods``): each entry point names a
  :class:`~prunelens.analysis.methods.base.Method` instance (what a built-in module calls
  ``METHOD``); the method registry adds them after the built-in methods, and the same contract
  tests hold them (``tests/unit/test_method_contract.py`` runs over every registered method);
- encoder families, in the group :data:`FAMILIES_GROUP` (``prunelens.families``): each entry
  point names one declarative family entry (:class:`~prunelens.analysis.layout.Family`); the
  layout registry adds them after the built-in families (``layout._plugin_families``: the name
  must be the entry point's, the model types and layer classes nobody else's).

A plug-in that fails to import, names something of the wrong kind, or reuses a name already
taken is left out with a :class:`PluginWarning` saying which package to fix; it never stops
prunelens from starting.
"""

from __future__ import annotations

import warnings
from importlib.metadata import entry_points
from typing import Callable

METHODS_GROUP = "prunelens.methods"
FAMILIES_GROUP = "prunelens.families"


class PluginWarning(UserWarning):
    """An installed plug-in was left out (it failed to load or did not fit)."""


def load_group(group: str, refuse: Callable[[str, object], str | None],
               taken: set[str] = frozenset()) -> dict[str, object]:
    """``entry point name -> loaded object`` for every entry point of ``group``, sorted by name.

    ``refuse(name, obj)`` says why an object does not fit (None: it fits); a name in ``taken`` or
    seen twice is refused too. Each refusal is one :class:`PluginWarning`."""
    found: dict[str, object] = {}
    for point in sorted(entry_points(group=group), key=lambda p: p.name):
        where = f"{point.value}" + (f" from {point.dist.name}" if point.dist else "")
        if point.name in taken or point.name in found:
            _warn(f"{group} plug-in '{point.name}' ({where}) left out: the name is already taken")
            continue
        try:
            obj = point.load()
        except Exception as exc:  # noqa: BLE001 (someone else's package: report, never crash)
            _warn(f"{group} plug-in '{point.name}' ({where}) failed to load: "
                  f"{type(exc).__name__}: {exc}")
            continue
        reason = refuse(point.name, obj)
        if reason:
            _warn(f"{group} plug-in '{point.name}' ({where}) left out: {reason}")
            continue
        found[point.name] = obj
    return found


def _warn(message: str) -> None:
    warnings.warn(message, PluginWarning, stacklevel=3)
