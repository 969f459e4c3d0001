"""The ``prunelens`` command line.

Subcommands: ``dashboard`` (the default), ``methods``, ``score``, ``prune``, ``export``, ``curve``, ``train``,
``precompute``, ``analyze``, ``sweep``, ``bench``, ``finetune``. Every analysis subcommand takes ``--model``, ``--data``,
``--limit`` and ``--json FILE``; progress goes to stderr. User errors print one line
``error: <what> (<what to do>)`` and exit with code 2; ``--debug`` shows tracebacks.

This module owns ``main`` (which function runs each subcommand: :data:`COMMANDS`; errors turned
into exit codes) and the ``dashboard`` command (its checks and the server it becomes). The flags
and help text are :mod:`prunelens.analysis.cli_parser`'s, the shared argument checks and the
``--json`` writer :mod:`prunelens.analysis.cli_args`'s, the analysis subcommands
:mod:`prunelens.analysis.cli_commands`'.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import warnings
from pathlib import Path

from prunelens.analysis.cli_commands import (cmd_analyze, cmd_bench, cmd_curve, cmd_export,
                                             cmd_finetune, cmd_methods, cmd_precompute, cmd_prune,
                                             cmd_score, cmd_sweep, cmd_train)
from prunelens.analysis.cli_parser import build_parser
from prunelens.analysis.errors import (EXIT_BAD_INPUT, EXIT_PARTIAL, ParamError, PartialFailure,
                                       PrunelensError, shown, terminal)


def cmd_dashboard(args) -> int:
    """Run the dashboard's server (``dashboard/server.py``: ``streamlit run`` with a Host/Origin
    check) in place of this process, offline unless ``--online``, with its data roots."""
    app = Path(__file__).resolve().parent.parent / "dashboard" / "app.py"
    if not app.exists():
        raise PrunelensError(f"dashboard not found at {app} (reinstall prunelens)")
    host = (args.host or "").strip()
    if not host:
        raise ParamError("--host needs an address (127.0.0.1: this machine only; 0.0.0.0: every "
                         "network interface, see SECURITY.md)")
    if not 0 < args.port < 65536:
        raise ParamError(f"--port must be in 1..65535, got {args.port}")
    roots = _data_roots(args.data_root)
    cmd = [sys.executable, "-P", "-m", "prunelens.dashboard.server", "run", str(app),
           "--server.address", host, "--server.port", str(args.port),
           "--server.headless", "true", "--browser.gatherUsageStats", "false",
           "--server.maxUploadSize", "50",
           "--client.toolbarMode", "viewer"]  # no Deploy button or developer menu
    # no downloads unless asked: hub ids and GLUE tasks come from the local caches only
    env = dict(os.environ)
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        env[name] = "0" if args.online else env.get(name, "1")
    env["PRUNELENS_DATA_ROOTS"] = os.pathsep.join(roots)  # read by dashboard/data_roots.py
    print(f"prunelens dashboard on http://{host}:{args.port}"
          + (" (every network interface)" if host == "0.0.0.0" else "")
          + (" (online: hub ids and GLUE may download)" if args.online
             else " (offline: hub ids and GLUE from the local cache; --online to download)")
          + f"; data files and model folders only inside {', '.join(roots)}",
          file=sys.stderr)
    return _launch(cmd, env)


def check_bind(host: str, port: int) -> None:
    """The server can listen on ``host``:``port``: the name resolves, is an address of this
    machine, and nothing listens on the port; else one ``error:`` line before Streamlit starts
    (a probe socket is bound and closed at once, with the same SO_REUSEADDR as the server)."""
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise ParamError(f"--host {shown(host)} cannot be resolved: {reason} (give an address of this "
                         "machine, e.g. 127.0.0.1)") from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ParamError(f"--port {port} is in use on {shown(host)} (stop what listens there, or "
                                 "give another --port)") from None
            if exc.errno == errno.EADDRNOTAVAIL:
                raise ParamError(f"--host {shown(host)} is not an address of this machine (give one of "
                                 "its own addresses, e.g. 127.0.0.1 or 0.0.0.0)") from None
            if exc.errno == errno.EACCES:
                raise ParamError(f"--port {port} needs privileges on {shown(host)} (use a port above 1023, "
                                 "e.g. 8501)") from None
            raise ParamError(f"cannot listen on {shown(host)} port {port}: {exc.strerror or exc} (give "
                             "another --host or --port)") from None


def _data_roots(given: list[str] | None) -> list[str]:
    """The folders the dashboard may read: ``--data-root`` (each an existing folder), else
    ``$PRUNELENS_DATA_ROOTS`` when set, else the working folder; resolved."""
    if not given:
        given = [p for p in os.environ.get("PRUNELENS_DATA_ROOTS", "").split(os.pathsep) if p.strip()]
    roots = []
    for folder in given or [os.getcwd()]:
        path = Path(folder).expanduser().resolve()
        if not path.is_dir():
            raise ParamError(f"--data-root {folder} is not a folder (give an existing folder)")
        roots.append(str(path))
    return roots


def _launch(cmd: list[str], env: dict[str, str] | None = None) -> int:
    """Replace this process with the server (so a signal to `prunelens` reaches it; no child),
    once :func:`check_bind` found its address usable (else one ``error:`` line, nothing started)."""
    if "--server.address" in cmd and "--server.port" in cmd:
        check_bind(cmd[cmd.index("--server.address") + 1], int(cmd[cmd.index("--server.port") + 1]))
    sys.stdout.flush()
    sys.stderr.flush()
    env = env if env is not None else dict(os.environ)
    if hasattr(os, "execve"):
        os.execve(cmd[0], cmd, env)
    return subprocess.call(cmd, env=env)  # pragma: no cover (platforms without exec)


COMMANDS = {  # subcommand (cli_parser.build_parser): the function that runs it
    "dashboard": cmd_dashboard, "methods": cmd_methods, "score": cmd_score, "prune": cmd_prune,
    "export": cmd_export, "curve": cmd_curve, "train": cmd_train, "precompute": cmd_precompute,
    "analyze": cmd_analyze, "bench": cmd_bench, "sweep": cmd_sweep, "finetune": cmd_finetune,
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version")):
        argv = ["dashboard", *argv]  # `prunelens [--port P]` starts the dashboard
    args = parser.parse_args(argv)
    debug = args.debug or os.environ.get("PRUNELENS_DEBUG") == "1"
    if not debug:
        warnings.simplefilter("ignore", FutureWarning)
    try:
        with warnings.catch_warnings():
            from prunelens.analysis.cache import StoreWarning

            warnings.simplefilter("always", StoreWarning)
            warnings.showwarning = _show_warning
            return int(COMMANDS[args.command](args) or 0)
    except PrunelensError as exc:
        if debug:
            raise
        sys.stderr.write(f"error: {terminal(exc)}\n")  # one line, whatever a file name holds
        return EXIT_PARTIAL if isinstance(exc, PartialFailure) else EXIT_BAD_INPUT
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted (nothing half-written was kept)\n")
        return 130
    except Exception as exc:  # a bug: one line unless --debug
        if debug:
            raise
        sys.stderr.write(f"error: internal error {type(exc).__name__}: {terminal(str(exc)[:200])} "
                         "(rerun with --debug and report it)\n")
        return 1


def _show_warning(message, category, filename, lineno, file=None, line=None):
    sys.stderr.write(f"warning: {terminal(message)}\n")


if __name__ == "__main__":
    raise SystemExit(main())
