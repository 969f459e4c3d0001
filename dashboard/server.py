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
``bootstrap._set_up_signal_handler``). The server refuses to start, with one ``error:`` line and
exit code 2, when the check cannot be active: a Streamlit older than :data:`GUARDED_SINCE` (its
server is not, or not only, the Starlette one the guard sits in), a release that renamed either
function, or a server that was built without calling the guarded middleware.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from urllib.parse import urlsplit

LOCAL_NAMES = ("localhost", "127.0.0.1", "[::1]")
STOP_GRACE_S = 5.0
GUARDED_SINCE = (1, 57)  # the first Streamlit whose one server is Starlette (pyproject's floor)
_built = threading.Event()  # set when Streamlit built its middleware through the guarded list


class GuardUnavailable(RuntimeError):
    """The Host/Origin check cannot be put in front of this Streamlit's server."""


def _release(text: str) -> tuple[int, ...]:
    parts = []
    for part in text.split(".")[:2]:
        digits = "".join(c for c in part if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def _guard_points():
    """Streamlit's module and function the hooks wrap, or :class:`GuardUnavailable` saying why
    the check cannot be installed."""
    import streamlit

    fix = f"install a supported one: pip install 'streamlit>={'.'.join(map(str, GUARDED_SINCE))}'"
    if _release(streamlit.__version__) < GUARDED_SINCE:
        raise GuardUnavailable(f"streamlit {streamlit.__version__} is too old for the dashboard's "
                               f"Host/Origin check, which guards the Starlette server ({fix})")
    try:
        from streamlit.web import bootstrap
        from streamlit.web.server.starlette import starlette_app
    except ImportError as exc:
        raise GuardUnavailable(f"streamlit {streamlit.__version__} has no {exc.name}, where the "
                               f"dashboard's Host/Origin check goes ({fix})") from None
    for module, name in ((starlette_app, "create_streamlit_middleware"),
                         (bootstrap, "_set_up_signal_handler")):
        if not callable(getattr(module, name, None)):
            raise GuardUnavailable(f"streamlit {streamlit.__version__} has no {module.__name__}."
                                   f"{name}, which the dashboard's Host/Origin check wraps ({fix})")
    return bootstrap, starlette_app


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
    the process promptly (idempotent). Raises :class:`GuardUnavailable` when the check cannot be
    installed; once the server is up, it ends the process if the server was built without it."""
    from starlette.middleware import Middleware

    bootstrap, starlette_app = _guard_points()
    middleware = starlette_app.create_streamlit_middleware
    if not getattr(middleware, "prunelens", False):
        def guarded_middleware():
            _built.set()
            return [Middleware(HostGuard), *middleware()]

        guarded_middleware.prunelens = True
        starlette_app.create_streamlit_middleware = guarded_middleware

    set_up = bootstrap._set_up_signal_handler
    if not getattr(set_up, "prunelens", False):
        def set_up_with_deadline(server) -> None:
            if not _built.is_set():  # the server started without the guarded middleware
                sys.stderr.write("error: this streamlit's server was built without the dashboard's "
                                 "Host/Origin check; stopped (install a supported streamlit, see "
                                 "pyproject.toml)\n")
                _exit_now(2)
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
    try:
        install()
    except GuardUnavailable as exc:  # before anything listens
        sys.stderr.write(f"error: {exc}\n")
        raise SystemExit(2) from None
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
