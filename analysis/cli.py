"""The ``prunelens`` command line.

Subcommands: ``dashboard`` (the default), ``methods``, ``score``, ``prune``, ``export``, ``curve``, ``train``,
``precompute``, ``analyze``, ``sweep``, ``bench``, ``finetune``. Every analysis subcommand takes ``--model``, ``--data``,
``--limit`` and ``--json FILE``; progress goes to stderr. User errors print one line
``error: <what> (<what to do>)`` and exit with code 2; ``--debug`` shows tracebacks.
"""

from __future__ import annotations

import argparse
import errno
import json
import math
import os
import re
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

from prunelens.analysis.errors import (EXIT_BAD_INPUT, EXIT_PARTIAL, ParamError, PartialFailure,
                                       PrunelensError, shown, terminal, usable_path)
from prunelens.analysis.objectives import OBJECTIVES


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, no usage dump
        sys.stderr.write(f"error: {message} (see `{self.prog} --help`)\n")
        raise SystemExit(2)


def _progress_printer(enabled: bool = True):
    """A progress sink that draws one tqdm bar on stderr, from the first report of work still
    to do: an answer from the store (nothing reported, or finished at once) draws no bar."""
    if not enabled:
        return lambda fraction, message="": None
    from tqdm import tqdm

    bars: list = []

    def progress(fraction: float, message: str = "") -> None:
        if not bars:
            if fraction >= 1.0:
                return
            bars.append(tqdm(total=1000, file=sys.stderr, leave=False, bar_format="{l_bar}{bar}| {desc}"))
        bar = bars[0]
        bar.n = int(max(0.0, min(1.0, fraction)) * 1000)
        bar.set_description_str(message[:60], refresh=True)
        if fraction >= 1.0:
            bar.refresh()

    progress.close = lambda: bars and bars[0].close()  # type: ignore[attr-defined]
    return progress


def _parse_params(pairs: list[str] | None) -> dict:
    params = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ParamError(f"--param takes name=value, got {shown(pair)}")
        name, value = pair.split("=", 1)
        if name.strip() in params:
            raise ParamError(f"--param {shown(name.strip())} is given twice ({shown(params[name.strip()])} and "
                             f"{shown(value.strip())}; give each parameter once)")
        params[name.strip()] = value.strip()
    return params


def _floats(text: str, what: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ParamError(f"{what} must be comma-separated numbers, got {shown(text)}") from None
    if not values:
        raise ParamError(f"{what} is empty (give comma-separated numbers, e.g. 0,0.25,0.5)")
    return values


def finite_json(payload) -> tuple[object, int]:
    """``payload`` with every NaN or infinite float replaced by None (JSON has no NaN: a bare
    ``NaN`` breaks strict readers), and how many were replaced."""
    count = 0

    def clean(value):
        nonlocal count
        if isinstance(value, float) and not math.isfinite(value):
            count += 1
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        return value

    return clean(payload), count


def _write_json(path: str | None, kind: str, payload: dict) -> None:
    """Write (or print, without ``path``) a ``kind`` output, stamped with its schema and the
    version (:mod:`prunelens.analysis.json_outputs` declares every kind); a value that is not a
    finite number is written as null, with a note."""
    from prunelens.analysis.json_outputs import stamp

    payload, replaced = finite_json(stamp(kind, payload))
    if replaced:
        note = (f"{replaced} value{'s' if replaced > 1 else ''} that {'are' if replaced > 1 else 'is'} not a "
                "finite number (e.g. a standard error of a single example) written as null")
        payload["notes"] = [*(payload.get("notes") or []), note]
        print(f"note: {note}", file=sys.stderr)
    text = json.dumps(payload, indent=2, allow_nan=False)
    if path:
        try:
            Path(path).expanduser().write_text(text + "\n")  # _check_output expanded it too
        except OSError as exc:
            raise PrunelensError(f"cannot write {path}: {exc.strerror} (choose a writable path)") from None
        print(f"wrote {path}", file=sys.stderr)
    else:
        print(text)


def _check_output(path: str | None) -> None:
    """Refuse an output path that cannot be written before any work is done: its folder is
    missing, ``~user`` names no user, or the name is too long for the file system."""
    if not path:
        return
    try:
        target = Path(path).expanduser()
    except RuntimeError:
        user = path[1:].split("/", 1)[0]
        raise PrunelensError(f"cannot write {shown(path)}: there is no user '{user}' "
                             "(give the full path)") from None
    try:
        os.stat(target)
    except FileNotFoundError:
        pass
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            raise PrunelensError(f"cannot write {shown(path)}: {exc.strerror} (give a shorter path)") from None
    except ValueError as exc:  # a NUL byte
        raise PrunelensError(f"cannot write {shown(path)}: {exc} (give another path)") from None
    try:
        folder_exists = target.resolve().parent.is_dir()
    except (OSError, RuntimeError) as exc:  # a symlink loop
        raise PrunelensError(f"cannot write {shown(path)}: {exc} (give another path)") from None
    if not folder_exists:
        raise PrunelensError(f"cannot write {path}: its folder does not exist (create it first)")


def _folder_arg(path: str | None, flag: str) -> Path | None:
    """A folder argument (``--out``, ``--store``) checked before any work: expandable, not too
    long, not a file. None when not given."""
    if path is None:
        return None
    folder = usable_path(path, flag, ParamError)
    if folder.exists() and not folder.is_dir():
        raise ParamError(f"{flag} {shown(path)} is a file (give a folder)")
    return folder


def check_device(device: str | None) -> str:
    """``--device``: cpu, cuda or cuda:N (a GPU this machine's torch sees), or mps where present;
    refused before anything loads."""
    text = (device or "").strip()
    match = re.fullmatch(r"cpu|mps|cuda(?::(\d{1,4}))?", text)
    if not match:
        raise ParamError(f"--device must be cpu, cuda or cuda:N, got {shown(device or '')} "
                         "(use --device cpu, or cuda on a machine with an NVIDIA GPU)")
    import torch

    if text == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ParamError("--device mps: this machine's torch has no MPS device (use --device cpu)")
    if text.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ParamError(f"--device {text}: this machine's torch sees no CUDA GPU (use --device cpu)")
        count, index = torch.cuda.device_count(), int(match.group(1) or 0)
        if index >= count:
            devices = "cuda:0" if count == 1 else f"cuda:0 .. cuda:{count - 1}"
            raise ParamError(f"--device {text}: there {'is' if count == 1 else 'are'} {count} CUDA "
                             f"device{'' if count == 1 else 's'} (use --device {devices}, or cpu)")
    return text


def _print_notes(session) -> None:
    """The objective's note (when chosen for the user), data notes and, once evaluation ran,
    truncation notes: one ``note:`` line each."""
    for note in session.notes:
        print(f"note: {terminal(note)}", file=sys.stderr)


def _session(args):
    from prunelens.analysis.data import check_data_spec
    from prunelens.analysis.models import check_model_spec
    from prunelens.analysis.operations import open_session

    _check_output(getattr(args, "json", None))
    _check_output(getattr(args, "csv", None))
    device = check_device(getattr(args, "device", "cpu"))
    check_data_spec(args.data, args.limit)  # --limit, and the data file exists and can be read
    check_model_spec(args.model)  # not blank; a folder exists, its files and config.json are sane
    # the data is read first: --objective labels on data without labels stops before the model loads
    return open_session(args.model, args.data, args.limit, device=device,
                        objective=getattr(args, "objective", None),
                        announce=lambda: print(f"loading model {shown(args.model)} and data "
                                               f"{shown(args.data)} ...", file=sys.stderr))


# ---------------------------------------------------------------------------------------------
# subcommands


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


def cmd_methods(args) -> int:
    from prunelens.analysis.methods import all_methods

    payload = [m.describe() for m in all_methods().values()]
    if args.json:
        _write_json(args.json, "methods", {"methods": payload})
    else:
        for m in payload:
            params = ", ".join(f"{p['name']}={p['default']}" for p in m["params"]) or "no parameters"
            print(f"{m['name']:<12} units: {','.join(m['units']):<28} {params}")
            print(f"{'':<12} {m['title']}: {m['summary']}")
            if m["trains"]:
                print(f"{'':<12} training mode: prunelens train --method {m['name']}")
    return 0


def _check_method_args(method_name: str, unit: str | None, raw_params: list[str] | None,
                       training: bool = False) -> None:
    """Method, unit and parameters checked before anything loads (one ``error:`` line)."""
    from prunelens.analysis.methods import get_method
    from prunelens.analysis.operations import default_unit

    method = get_method(method_name)
    params = _parse_params(raw_params)
    if training:
        from prunelens.analysis.training import get_trainer

        get_trainer(method_name).validate(params)
        return
    default_unit(method_name, unit)
    method.validate(params)


def cmd_score(args) -> int:
    from prunelens.analysis.compare import constant_scores_warning
    from prunelens.analysis.operations import compute_scores

    _check_method_args(args.method, args.unit, args.param)
    session = _session(args)
    progress = _progress_printer(not args.quiet)
    result = compute_scores(session, args.method, args.unit, _parse_params(args.param), progress,
                            use_store=not args.no_cache)
    payload = result.as_json(session)
    if args.json:
        _write_json(args.json, "score", payload)
    else:
        import numpy as np

        print(f"{result.method} {result.unit} scores ({'from the store' if result.cached else f'{result.seconds:.1f}s'}):")
        print(np.array2string(result.scores, precision=3, suppress_small=True, max_line_width=120))
    flat = constant_scores_warning(result.scores, result.method)
    if flat:
        print(f"warning: {flat}", file=sys.stderr)
    return 0


def cmd_prune(args) -> int:
    from prunelens.analysis.operations import prune
    from prunelens.analysis.pruning import check_selection

    check_selection(args.sparsity, args.threshold)
    _check_method_args(args.method, args.unit, args.param)
    session = _session(args)
    out = prune(session, args.method, args.sparsity, args.unit, args.scope, _parse_params(args.param),
                physical=args.physical, threshold=args.threshold,
                keep_one_per_layer=args.keep_one_per_layer, progress=_progress_printer(not args.quiet))
    capped = out.get("notes", [])
    out["notes"] = session.notes + capped
    _print_notes(session)
    for note in capped:
        print(f"note: {terminal(note)}", file=sys.stderr)
    if args.json:
        _write_json(args.json, "prune", out)
    else:
        b, p, d, c = out["base"], out["pruned"], out["delta"], out["compression"]
        removed_units = sum(1 for v in _flatten(out["mask"]) if v == 0)
        print(f"{out['method']} {out['unit']}: removed {removed_units} units "
              f"(sparsity {out['sparsity']:.1%}, {c['removed']:,} of {c['total']:,} encoder params = {c['fraction']:.1%})")
        for name, shown_as in (("accuracy", b["metric_name"] if out["objective"] != "labels" else "accuracy"),
                               ("loss", "loss"), ("margin", "margin")):
            print(f"  {shown_as:<9} base {b[name]:.4f}  pruned {p[name]:.4f}  delta {d[name]:+.4f} "
                  f"± {d[name + '_se']:.4f}  [masked]")
        if "flipped_count" in out:
            n = out["flipped_count"]
            print(f"  {n} prediction{'' if n == 1 else 's'} flipped")
        if "physical" in out:
            ph = out["physical"]
            print(f"  physically pruned: {ph['metric_name']} {ph['metric']:.4f}, max |output diff| vs masked "
                  f"{ph['max_abs_difference']:.2e}, {ph['seconds']:.3f}s vs masked "
                  f"{ph['masked_seconds']:.3f}s: {ph['speedup']}x (runs ranged "
                  f"{ph['speedup_range'][0]}x–{ph['speedup_range'][1]}x; {ph['timed']})")
    return 0


def cmd_export(args) -> int:
    from prunelens.analysis.export import check_onnx_available, check_out_dir, export
    from prunelens.analysis.methods import get_method
    from prunelens.analysis.operations import default_unit
    from prunelens.analysis.layout import UNITS
    from prunelens.analysis.pruning import check_sparsity

    check_sparsity(args.sparsity)  # everything is checked before the model loads
    check_out_dir(args.out)
    if default_unit(args.method, args.unit) not in UNITS:
        raise ParamError(f"unit '{default_unit(args.method, args.unit)}' cannot be cut out of the "
                         f"weights (give --unit {' or '.join(UNITS)})")
    params = _parse_params(args.param)
    get_method(args.method).validate(params)
    if not args.no_onnx:
        check_onnx_available()
    session = _session(args)
    out = export(session, args.method, args.sparsity, args.out, args.unit, args.scope, params,
                 onnx=not args.no_onnx, progress=_progress_printer(not args.quiet))
    _print_notes(session)
    if args.json:
        _write_json(args.json, "export", out)
    diff = out["max_abs_logit_difference"]
    print(f"{out['method']} {out['unit']} at sparsity {out['sparsity']:.1%}: wrote {out['out']} "
          f"(encoder params {out['encoder_params']['pruned']:,} of {out['encoder_params']['unpruned']:,})")
    print(f"  reloaded vs masked max |logit diff| {diff['reloaded_vs_masked']:.2e}")
    if "onnx" in out:
        o = out["onnx"]
        print(f"  ONNX vs torch max |logit diff| {diff['onnx_vs_torch_pruned']:.2e}; onnxruntime on "
              f"{o['examples']} examples: pruned {o['seconds_pruned']:.3f}s, unpruned "
              f"{o['seconds_unpruned']:.3f}s ({o['speedup']:.2f}x faster)")
    return 0


def _flatten(x):
    if isinstance(x, list):
        for item in x:
            yield from _flatten(item)
    else:
        yield x


def cmd_curve(args) -> int:
    from prunelens.analysis.methods import get_method
    from prunelens.analysis.operations import curve
    from prunelens.analysis.pruning import check_sparsity

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods:
        raise ParamError("--methods needs at least one method name")
    for name in methods:
        get_method(name).check_unit(args.unit)
    for sparsity in _floats(args.sparsities, "--sparsities"):
        check_sparsity(sparsity)
    session = _session(args)
    rows = curve(session, methods, _floats(args.sparsities, "--sparsities"), args.unit, args.scope,
                 progress=_progress_printer(not args.quiet))
    _print_notes(session)
    if args.csv:
        import pandas as pd

        try:
            pd.DataFrame(rows).to_csv(args.csv, index=False)
        except OSError as exc:
            raise PrunelensError(f"cannot write {args.csv}: {exc.strerror}") from None
        print(f"wrote {args.csv}", file=sys.stderr)
    if args.json or not args.csv:
        if args.json:
            _write_json(args.json, "curve", {"rows": rows})
        else:
            for r in rows:
                print(f"{r['method']:<12} {r['sparsity']:>5.2f}  acc {r['accuracy']:.4f}  loss {r['loss']:.4f}  margin {r['margin']:.3f}")
    return 0


FINETUNE_OUT = "finetuned-default"  # `prunelens finetune` writes here (in the working folder) by default


def finetune_target(out: str | None, overwrite_shipped: bool) -> Path:
    """Where ``prunelens finetune`` writes: ``--out``, else :data:`FINETUNE_OUT`; the shipped
    checkpoint only with ``--overwrite-shipped`` (checked before anything loads)."""
    from prunelens.analysis.models import CHECKPOINT_DIR

    if overwrite_shipped and out:
        raise ParamError("give --out or --overwrite-shipped, not both")
    if overwrite_shipped:
        return CHECKPOINT_DIR
    target = _folder_arg(out, "--out") or Path(FINETUNE_OUT)
    if target.resolve() == CHECKPOINT_DIR.resolve():
        raise ParamError(f"--out {out} is the shipped checkpoint (add --overwrite-shipped instead, "
                         "knowing it orphans every shipped result)")
    return target


def cmd_finetune(args) -> int:
    from prunelens.analysis.finetune import Recipe, finetune

    out_dir = finetune_target(args.out, args.overwrite_shipped)
    if args.overwrite_shipped:
        from prunelens.analysis.cache import SHIPPED_DIR

        shipped = sum(1 for _ in Path(SHIPPED_DIR).glob("*/*.json"))
        print(f"overwriting the shipped checkpoint {out_dir}: unless the retrain is bit-identical, the "
              f"default model's fingerprint changes and the {shipped:,} shipped results in "
              f"{SHIPPED_DIR} (every page's instant answers, the training runs, docs/FIDELITY.md's "
              "numbers) no longer match it; regenerate them with `prunelens precompute`",
              file=sys.stderr)
    recipe = Recipe(epochs=args.epochs, seed=args.seed)
    manifest = finetune(recipe, out_dir=out_dir)
    print(f"wrote {out_dir}", file=sys.stderr)
    _write_json(args.json, "finetune", manifest)
    return 0


def cmd_precompute(args) -> int:
    from prunelens.analysis.analyze import check_methods
    from prunelens.analysis.precompute import precompute
    from prunelens.analysis.sweep.spec import Target

    methods = check_methods([m for m in (args.methods or "").split(",") if m.strip()])
    out_dir = _folder_arg(args.out, "--out")
    head_scopes = _head_scopes(args.head_scopes)  # checked before anything loads
    curve_points = _curve_points(args.curve_step)
    session = _session(args)
    summary = precompute(session, Target(args.model, args.data, args.limit, _objective_of(args)),
                         out_dir=out_dir, methods=methods,
                         include_training=not args.skip_training, progress=not args.quiet,
                         head_scopes=head_scopes, curve_sparsities=curve_points)
    _write_json(args.json, "precompute", summary)
    return 0


def cmd_analyze(args) -> int:
    from prunelens.analysis.analyze import check_methods, format_seconds, run_analysis
    from prunelens.analysis.cache import ResultStore
    from prunelens.analysis.sweep import print_report
    from prunelens.analysis.sweep.spec import Target

    methods = check_methods([m for m in (args.methods or "").split(",") if m.strip()])
    store_dir = _folder_arg(args.store, "--store")
    head_scopes = _head_scopes(args.head_scopes)  # checked before anything loads
    curve_points = _curve_points(args.curve_step)
    session = _session(args)
    if store_dir is not None:
        session.store = ResultStore(user_dir=store_dir)
    done = run_analysis(session, Target(args.model, args.data, args.limit, _objective_of(args)), methods,
                        training=args.train, progress=not args.quiet, dry_run=args.dry_run,
                        head_scopes=head_scopes, curve_sparsities=curve_points)
    print_report(done.report)
    if not args.dry_run and done.report.count("done"):
        print(f"estimated {format_seconds(done.estimated_seconds)}, took "
              f"{format_seconds(done.report.wall_seconds)}; every page now answers from the store")
    if args.json:
        _write_json(args.json, "analyze", done.as_json())
    failed = done.report.count("failed")
    if failed:
        raise PartialFailure(f"{failed} task(s) failed twice (listed above); everything else is "
                             "stored: run the same command again to retry them")
    return 0


def cmd_bench(args) -> int:
    from prunelens.analysis.bench import run_bench

    session = _session(args)
    result = run_bench(session, quick=args.quick, specs=(args.model, args.data, args.limit),
                       skip_ablation=args.skip_ablation)
    _write_json(args.json, "bench", result)
    return 0


def cmd_sweep(args) -> int:
    from prunelens.analysis.cache import ResultStore
    from prunelens.analysis.sweep import SweepFailed, load_spec, print_report, run_sweep

    _check_output(args.json)
    store_dir = _folder_arg(args.store, "--store")
    spec = load_spec(args.spec)
    store = ResultStore(user_dir=store_dir) if store_dir is not None else ResultStore()
    report = run_sweep(spec, store, args.executor, args.workers, args.threads, args.address,
                       args.device, args.gpus_per_task, progress=not args.quiet, dry_run=args.dry_run)
    print_report(report)
    if args.json:
        _write_json(args.json, "sweep", report.as_json())
    failed = report.count("failed")
    if failed:
        raise SweepFailed(f"{failed} of {len(report.records)} tasks failed twice (listed above); "
                          "everything else is stored: rerun the same command to try them again")
    return 0


def _head_scopes(text: str | None) -> tuple[str, ...] | None:
    """``--head-scopes global[,layer]`` (None: both)."""
    if text is None:
        return None
    scopes = tuple(s.strip() for s in text.split(",") if s.strip())
    bad = [s for s in scopes if s not in ("global", "layer")]
    if bad or not scopes:
        raise ParamError(f"--head-scopes must list global and/or layer, got {text!r} (e.g. --head-scopes global)")
    return scopes


def _curve_points(step: float | None) -> tuple[float, ...] | None:
    """``--curve-step S``: head curves at 0, S, 2S, ... below 1 (None: the Prune slider's 5% grid)."""
    if step is None:
        return None
    if not 0.01 <= step <= 0.5:
        raise ParamError(f"--curve-step must be in [0.01, 0.5], got {step} (e.g. --curve-step 0.1)")
    return tuple(round(step * i, 4) for i in range(int(round(1 / step))) if step * i < 1 - 1e-9)


def _objective_of(args) -> str | None:
    """``--objective`` as given (None: the model's and data's default)."""
    return getattr(args, "objective", None)


def cmd_train(args) -> int:
    from prunelens.analysis.training import get_trainer, train_command

    _check_method_args(args.method, None, args.param, training=True)
    reason = get_trainer(args.method).is_compatible(args.objective or "labels")
    if args.objective and reason:  # refused before anything loads
        raise ParamError(f"training mode '{args.method}' cannot run here: {reason}")
    session = _session(args)
    out = train_command(session, args.method, _parse_params(args.param),
                        progress=_progress_printer(not args.quiet), use_store=not args.no_cache)
    if args.json:
        _write_json(args.json, "train", out)
    else:
        print(train_summary(out))
    return 0


def train_summary(out: dict) -> str:
    """A training run in a few lines (as ``score`` and ``prune`` print theirs): what ran, each
    variant's accuracy, loss and margin with standard errors, the notes; the whole result
    (histories, scores, correctness strings) only with ``--json FILE``."""
    from prunelens.analysis.run_result import normalise
    from prunelens.analysis.training import changed_params

    run = normalise(out)
    changed = changed_params(run.method, run.params)
    data = out.get("data") or {}
    source = "from the store" if out.get("cached") else f"{out.get('seconds', 0):.1f}s"
    lines = [f"{run.method} training run ({source}) on {data.get('name', '?')} "
             f"({data.get('n', '?')} examples); settings: "
             + (", ".join(f"{k}={v}" for k, v in changed.items()) or "the defaults")]
    width = max([len(run.label(n)) for n in run.variants] + [7])
    lines.append(f"  {'variant':<{width}}  {'accuracy':>15}  {'loss':>15}  {'margin':>15}")
    for name, m in run.variants.items():
        cells = [f"{m[k]:.3f} ± {m.get(f'{k}_se', 0.0):.3f}" if isinstance(m.get(k), int | float)
                 else "-" for k in ("accuracy", "loss", "margin")]
        lines.append(f"  {run.label(name):<{width}}  " + "  ".join(f"{c:>15}" for c in cells))
    lines += [f"note: {note}" for note in run.notes]
    lines.append("(the whole result, with histories and scores: --json FILE)")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--model", default="default", help="default, a local folder, or a hub id")
    common.add_argument("--data", default="default", help="default (Rotten Tomatoes), glue:<task>, or a CSV/JSONL path")
    common.add_argument("--limit", type=int, default=None, help="evaluate on the first N examples only")
    common.add_argument("--json", default=None, metavar="FILE", help="write the result as JSON")
    common.add_argument("--quiet", action="store_true", help="no progress bar")
    common.add_argument("--debug", action="store_true", help="show tracebacks")
    common.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    common.add_argument("--objective", choices=OBJECTIVES, default=None,
                        help="what pruning is measured against: labels (gold labels), agreement (the "
                             "unpruned model's predictions, no labels needed) or embedding (a headless "
                             "encoder's sentence vectors); default: labels for a classifier on labelled "
                             "data, agreement without labels, embedding for a headless encoder")

    parser = _Parser(prog="prunelens", description="Which heads and modules of a BERT encoder matter?")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    p = sub.add_parser("dashboard", help="start the dashboard (localhost only)")
    p.add_argument("--port", type=int, default=8501)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default localhost only)")
    p.add_argument("--online", action="store_true",
                   help="let hub ids and GLUE tasks download (default: local caches only)")
    p.add_argument("--data-root", action="append", metavar="DIR",
                   help="a folder whose data files and model folders the dashboard may open "
                        "(repeatable; default: the folder it is started in)")
    p.add_argument("--debug", action="store_true")
    p.set_defaults(func=cmd_dashboard)

    p = sub.add_parser("methods", help="methods, units and declared parameters")
    p.add_argument("--json", default=None, metavar="FILE")
    p.add_argument("--debug", action="store_true")
    p.set_defaults(func=cmd_methods)

    p = sub.add_parser("score", parents=[common], help="importance scores of one method")
    p.add_argument("--method", required=True)
    p.add_argument("--unit", default=None, help="head, attention, ffn or neuron")
    p.add_argument("--param", action="append", metavar="NAME=VALUE")
    p.add_argument("--no-cache", action="store_true", help="recompute, do not read or write the store")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("prune", parents=[common], help="prune by a method's scores and evaluate")
    p.add_argument("--method", required=True)
    p.add_argument("--sparsity", type=float, default=None, help="fraction of units removed, in [0, 1)")
    p.add_argument("--threshold", type=float, default=None, help="remove units scoring below this")
    p.add_argument("--unit", default=None)
    p.add_argument("--scope", choices=("global", "layer"), default=None)
    p.add_argument("--keep-one-per-layer", action="store_true")
    p.add_argument("--physical", action="store_true", help="also slice the weights and compare")
    p.add_argument("--param", action="append", metavar="NAME=VALUE")
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser("export", parents=[common], help="write the physically pruned model (+ ONNX)")
    p.add_argument("--method", required=True)
    p.add_argument("--sparsity", type=float, required=True, help="fraction of units removed, in [0, 1)")
    p.add_argument("--out", required=True, help="folder to write (new, empty, or an earlier export)")
    p.add_argument("--unit", default=None, help="head, attention, ffn or neuron")
    p.add_argument("--scope", choices=("global", "layer"), default=None)
    p.add_argument("--param", action="append", metavar="NAME=VALUE")
    p.add_argument("--no-onnx", action="store_true", help="only the prunelens-loadable weights")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("curve", parents=[common], help="accuracy/loss vs sparsity for several methods")
    p.add_argument("--methods", required=True, help="comma-separated method names")
    p.add_argument("--sparsities", default="0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9")
    p.add_argument("--unit", default="head")
    p.add_argument("--scope", choices=("global", "layer"), default="global")
    p.add_argument("--csv", default=None, metavar="FILE")
    p.set_defaults(func=cmd_curve)

    p = sub.add_parser("train", parents=[common], help="a method's training mode (train --help lists them), cached")
    p.add_argument("--method", required=True)
    p.add_argument("--param", action="append", metavar="NAME=VALUE")
    p.add_argument("--no-cache", action="store_true")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("precompute", parents=[common], help="fill the store for a model/data pair")
    p.add_argument("--out", default=None, help="store folder to write (default: the user store)")
    p.add_argument("--methods", default=None, help="comma-separated subset of methods")
    p.add_argument("--skip-training", action="store_true")
    p.add_argument("--head-scopes", default=None, metavar="SCOPES",
                   help="head curves' scopes, e.g. global (default: global,layer)")
    p.add_argument("--curve-step", type=float, default=None, metavar="S",
                   help="head curves at 0, S, 2S, ... (default: the Prune slider's 0.05 grid)")
    p.set_defaults(func=cmd_precompute)

    p = sub.add_parser("analyze", parents=[common],
                       help="fill the store for a new model/data pair: every page then answers at once")
    p.add_argument("--methods", default=None, help="comma-separated subset of methods (default: all)")
    p.add_argument("--train", action="store_true", help="also run every training mode (long)")
    p.add_argument("--store", default=None, help="store folder to fill (default: the user store)")
    p.add_argument("--dry-run", action="store_true", help="plan and estimate, compute nothing")
    p.add_argument("--head-scopes", default=None, metavar="SCOPES",
                   help="head curves' scopes, e.g. global (default: global,layer)")
    p.add_argument("--curve-step", type=float, default=None, metavar="S",
                   help="head curves at 0, S, 2S, ... (default: the Prune slider's 0.05 grid)")
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser("bench", parents=[common], help="benchmark suite (ratios against a naive loop)")
    p.add_argument("--quick", action="store_true", help="fewer repetitions")
    p.add_argument("--skip-ablation", action="store_true",
                   help="leave out the leave-one-out ablation of every head (the longest figure)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("sweep", help="run a grid of analyses and training runs (docs/SWEEPS.md)")
    p.add_argument("spec", help="a sweep spec (.toml), e.g. examples/sweep-small.toml")
    p.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="local: this machine (--workers N processes); ray: a Ray cluster")
    p.add_argument("--workers", type=int, default=None,
                   help="local: parallel processes (default 1, in this process); ray: CPUs of a "
                        "locally started cluster (default all)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per task (default 1: the same numbers under every executor)")
    p.add_argument("--address", default=None, help="Ray cluster address (auto, or host:port)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, or auto (CUDA when present)")
    p.add_argument("--gpus-per-task", type=float, default=1.0, help="Ray: GPUs per task on CUDA")
    p.add_argument("--store", default=None, help="store folder to fill (default: the user store)")
    p.add_argument("--dry-run", action="store_true", help="list the entries, compute nothing")
    p.add_argument("--json", default=None, metavar="FILE", help="write the summary as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("finetune", help="rebuild the default checkpoint")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--out", default=None,
                   help=f"folder to write (default: ./{FINETUNE_OUT}; never the shipped checkpoint)")
    p.add_argument("--overwrite-shipped", action="store_true",
                   help="write into the shipped analysis/default_checkpoint/ (orphans every shipped "
                        "result unless the retrain is bit-identical)")
    p.add_argument("--json", default=None, metavar="FILE")
    p.add_argument("--debug", action="store_true")
    p.set_defaults(func=cmd_finetune)
    _document(parser, sub)
    return parser


# ---------------------------------------------------------------------------------------------
# help: what each subcommand does, examples, exit codes, the registry's method names

EXIT_CODES = """exit codes:
  0  done
  2  a bad argument or input (one `error:` line; nothing was computed)
  3  partial: some tasks failed after a retry, every other result was kept (sweep, analyze,
     precompute); rerun the same command to retry them
  1  an internal error (a bug: rerun with --debug and report it); 130 interrupted"""

HELP = {  # subcommand: (description, examples)
    "dashboard": ("Start the dashboard on this machine (http://127.0.0.1:8501). Offline unless "
                  "--online; the File path choices read only inside the data roots.",
                  ["prunelens dashboard --port 8502", "prunelens dashboard --data-root ~/data"]),
    "methods": ("List every method (built in and installed plug-ins), the units it scores and "
                "its declared parameters.", ["prunelens methods", "prunelens methods --json m.json"]),
    "score": ("Importance scores of one method for one unit (higher = more important), from the "
              "store when present.",
              ["prunelens score --method michel --json s.json",
               "prunelens score --method snip --unit ffn --param relative=true"]),
    "prune": ("Remove the lowest-scoring units (a sparsity or a threshold) and evaluate the "
              "pruned model against the unpruned one.",
              ["prunelens prune --method michel --sparsity 0.5",
               "prunelens prune --method magnitude --sparsity 0.3 --unit ffn --physical"]),
    "export": ("Write the physically pruned model (loadable with --model DIR) and, unless "
               "--no-onnx, an ONNX file timed in onnxruntime.",
               ["prunelens export --method michel --sparsity 0.5 --out pruned/"]),
    "curve": ("Accuracy, loss and margin against sparsity for several methods.",
              ["prunelens curve --methods michel,snip,random --sparsities 0,0.4,0.8 --csv c.csv"]),
    "train": ("Run (or read from the store) one training run of a method's training mode; "
              "--method takes the training modes listed under options.",
              ["prunelens train --method admm", "prunelens train --method pins --param seed=1"]),
    "precompute": ("Fill a store folder for a model/data pair: analyze plus every training mode "
                   "(what ships in cached_results/ for the default).",
                   ["prunelens precompute --out cached_results"]),
    "analyze": ("Fill the store for a model/data pair as one resumable job: an estimate first, "
                "the cheapest method first; rerun to continue.",
                ["prunelens analyze --model ~/my-bert --data dev.csv",
                 "prunelens analyze --model ~/my-bert --data dev.csv --dry-run"]),
    "sweep": ("Run a grid of analyses and training runs from a TOML spec (docs/SWEEPS.md), "
              "here, in local processes or on Ray.",
              ["prunelens sweep examples/sweep-small.toml",
               "prunelens sweep spec.toml --workers 2"]),
    "bench": ("Time evaluation, scoring and the slider as ratios against a naive loop "
              "(docs/PERFORMANCE.md).", ["prunelens bench --quick --json bench.json"]),
    "finetune": ("Rebuild the embedded default checkpoint with the recipe of analysis/finetune.py.",
                 ["prunelens finetune --out /tmp/checkpoint"]),
}


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and epilogs as written; option help wrapped without breaking a method name
    at its hyphen (``admm-quant``)."""

    def _split_lines(self, text, width):
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


class _MethodNames:
    """The registry's method names (or training modes), read when --help shows them: building
    the parser imports no method. Validation stays with ``get_method``/``get_trainer``, whose
    messages say what to choose."""

    def __init__(self, training: bool = False) -> None:
        self.training = training

    def _names(self) -> list[str]:
        from prunelens.analysis.methods import all_methods

        return [n for n, m in all_methods().items() if not self.training or m.trainer is not None]

    def __iter__(self):
        return iter(self._names())

    def __contains__(self, name) -> bool:
        return name in self._names()


def _document(parser: argparse.ArgumentParser, sub) -> None:
    """Descriptions, examples and exit codes for every subcommand; ``--method``'s choices."""
    from prunelens import __version__

    parser.add_argument("--version", action="version", version=f"prunelens {__version__}")
    parser.formatter_class = _HelpFormatter
    parser.epilog = ("run `prunelens COMMAND --help` for a command's options and examples\n\n"
                     + EXIT_CODES)
    for name, child in sub.choices.items():
        description, examples = HELP[name]
        child.description = textwrap.fill(description, 92)
        child.formatter_class = _HelpFormatter
        child.epilog = "examples:\n" + "\n".join(f"  {e}" for e in examples) + "\n\n" + EXIT_CODES
        for action in child._actions:
            if action.dest == "method":
                action.choices = _MethodNames(training=name == "train")
                action.metavar = "MODE" if name == "train" else "METHOD"
                action.help = ("training mode: %(choices)s" if name == "train"
                               else "one of: %(choices)s")
            elif action.dest == "param" and action.help is None:
                action.help = "a declared parameter, repeatable (`prunelens methods` lists them)"


def _skip_registry_check(parser_check):
    """argparse's own choices check, except for method names (``get_method`` words that error)."""
    def check(self, action, value):
        if isinstance(action.choices, _MethodNames):
            return None
        return parser_check(self, action, value)
    return check


_Parser._check_value = _skip_registry_check(argparse.ArgumentParser._check_value)


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
            return int(args.func(args) or 0)
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
