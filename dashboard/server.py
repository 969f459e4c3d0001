"""The dashboard's server: ``streamlit run`` with a Host/Origin check and a prompt, clean SIGTERM.

``prunelens dashboard`` runs ``python -m prunelens.dashboard.server run dashboard/app.py --server.address
… --server.port …`` (the arguments of ``streamlit run``). Before Streamlit starts:

- :class:`HostGuard` goes first in Streamlit's Starlette middleware. It refuses (HTTP 403, or
  a websocket closed before it opens) every request whose ``Host`` header is not the bound
  address, ``localhost``, ``127.0.0.1`` or ``[::1]`` with the server's port, and every websocket
  whose ``Origin`` is not one of those. That stops DNS rebinding: a page on ``evil.example``
  whose name was re-pointed at 127.0.0.1 reaches the server with ``Host: evil.example`` and the
  same Origin, which Streamlit's own check (Origin equal to Host) lets through.
- SIGTERM/SIGINT still stop Streamlit gracefully, but the process then ends with ``os._exit``:
  a training run's torch thread still working at interpreter shutdown made it abort (SIGABRT,
  "terminate called without an active exception"); and if the graceful stop hangs, the
  process exits anyway after :data:`STOP_GRACE_S`.

Both hooks wrap Streamlit functions (``starlette_app.create_streamlit_middleware``,
``bootstrap._set_up_signal_handler``); if a Streamlit release renames them the server refuses
to start rather than run without the check.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from urllib.parse import urlsplit

LOCAL_NAMES = ("localhost", "127.0.0.1", "[::1]")
STOP_GRACE_S = 5.0


def allowed_hosts(address: str, port: int) -> frozenset[str]:
    """``Host`` values (lower case) the server answers: each local name and the bound address,
    with the port (and without it on port 80)."""
    bound = address.strip().lower()
    if ":" in bound and not bound.startswith("["):
        bound = f"[{bound}]"  # an IPv6 literal, as a Host header writes it
    names = {*LOCAL_NAMES, bound} - {""}
    return frozenset({f"{n}:{port}" for n in names} | (names if port == 80 else set()))


def origin_allowed(origin: str, hosts: frozenset[str]) -> bool:
    """Whether a websocket's ``Origin`` (``http(s)://host[:port]``) is one of ``hosts``."""
    parts = urlsplit(origin.strip().lower())
    return parts.scheme in ("http", "https") and parts.netloc in hosts


class HostGuard:
    """ASGI middleware: refuse foreign ``Host`` headers (HTTP and websocket) and foreign websocket
    ``Origin`` headers. ``address`` defaults to Streamlit's ``server.address``."""

    def __init__(self, app, address: str | None = None) -> None:
        self.app, self.address = app, address

    def _address(self) -> str:
        if self.address is not None:
            return self.address
        from streamlit import config

        return config.get_option("server.address") or "127.0.0.1"

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] in ("http", "websocket"):
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
            port = (scope.get("server") or ("", 0))[1]
            hosts = allowed_hosts(self._address(), port)
            origin = headers.get("origin")
            foreign = headers.get("host", "").strip().lower() not in hosts or (
                scope["type"] == "websocket" and origin is not None and not origin_allowed(origin, hosts))
            if foreign:
                await _refuse(scope, send)
                return
        await self.app(scope, receive, send)


async def _refuse(scope, send) -> None:
    if scope["type"] == "websocket":  # closing before accepting: the server answers 403
        await send({"type": "websocket.close", "code": 1008})
        return
    body = b"refused: this dashboard answers only to its own address (see SECURITY.md)\n"
    await send({"type": "http.response.start", "status": 403,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def install() -> None:
    """Put :class:`HostGuard` in front of Streamlit's middleware and make a stop signal end
    the process promptly (idempotent)."""
    from starlette.middleware import Middleware
    from streamlit.web import bootstrap
    from streamlit.web.server.starlette import starlette_app

    middleware = starlette_app.create_streamlit_middleware
    if not getattr(middleware, "prunelens", False):
        def guarded_middleware():
            return [Middleware(HostGuard), *middleware()]

        guarded_middleware.prunelens = True
        starlette_app.create_streamlit_middleware = guarded_middleware

    set_up = bootstrap._set_up_signal_handler
    if not getattr(set_up, "prunelens", False):
        def set_up_with_deadline(server) -> None:
            set_up(server)
            for sig in (signal.SIGTERM, signal.SIGINT):
                graceful = signal.getsignal(sig)

                def handler(number, frame, graceful=graceful):
                    deadline = threading.Timer(STOP_GRACE_S, _exit_now, args=(128 + number,))
                    deadline.daemon = True
                    deadline.start()
                    if callable(graceful):
                        graceful(number, frame)

                signal.signal(sig, handler)

        set_up_with_deadline.prunelens = True
        bootstrap._set_up_signal_handler = set_up_with_deadline


def _exit_now(code: int) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(argv: list[str] | None = None) -> None:
    """``streamlit <argv>`` (e.g. ``run app.py --server.port 8501``) with :func:`install` first;
    the process ends without interpreter shutdown, which background threads could crash."""
    install()
    from streamlit.web import cli

    sys.argv = ["streamlit", *(sys.argv[1:] if argv is None else argv)]
    code = 0
    try:
        cli.main(prog_name="streamlit")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    _exit_now(code)


if __name__ == "__main__":
    main()
