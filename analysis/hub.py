"""Whether the Hugging Face hub can be reached, asked once, and offline mode when it cannot.

Without a network, transformers and datasets retry every request several times before giving
up (about a minute for a hub id or a GLUE task, with retry lines on stderr). :func:`unavailable`
asks once per process (a TCP connection to the hub's host, a few seconds at most, remembered
for :data:`REMEMBER_S`); when the hub is unreachable it switches this process to offline mode
(``HF_HUB_OFFLINE``, the same switch ``huggingface_hub``, transformers and datasets read), so
loads answer from the local cache or fail at once with prunelens' own message.
"""

from __future__ import annotations

import os
import socket
import time
from urllib.parse import urlparse

PROBE_TIMEOUT_S = 3.0
REMEMBER_S = 300.0
_probe: tuple[float, bool] | None = None  # (when, reachable)


def offline() -> bool:
    """Whether this process is in the hub's offline mode (set by the user or by this module)."""
    return os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() not in ("0", "", "false", "no")


def hub_host() -> tuple[str, int]:
    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    return endpoint.hostname or "huggingface.co", endpoint.port or (80 if endpoint.scheme == "http" else 443)


def reachable() -> bool:
    """One TCP connection to the hub's host (remembered for a while, good or bad)."""
    global _probe
    now = time.monotonic()
    if _probe is not None and now - _probe[0] < REMEMBER_S:
        return _probe[1]
    try:
        with socket.create_connection(hub_host(), timeout=PROBE_TIMEOUT_S):
            ok = True
    except OSError:
        ok = False
    _probe = (now, ok)
    return ok


def unavailable() -> str | None:
    """None when the hub may be asked; otherwise why not (offline mode is then switched on)."""
    if offline():
        return "offline mode is on (HF_HUB_OFFLINE)"
    if reachable():
        return None
    go_offline()
    host, _ = hub_host()
    return f"the hub ({host}) cannot be reached from this machine"


def go_offline() -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    try:  # already imported libraries read their module-level switch, not the environment
        import huggingface_hub.constants as hub_constants

        hub_constants.HF_HUB_OFFLINE = True
    except ImportError:  # pragma: no cover
        pass
    try:
        import datasets.config as datasets_config

        datasets_config.HF_HUB_OFFLINE = True
        datasets_config.HF_DATASETS_OFFLINE = True
    except ImportError:  # pragma: no cover
        pass
