"""The analysis subcommands of ``prunelens``: ``methods``, ``score``, ``prune``, ``export``,
``curve``, ``train``, ``finetune``, ``precompute``, ``analyze``, ``bench`` and ``sweep``, one
``cmd_*`` function each (``args`` in, exit code out), with what only they share: opening the
session after every argument is checked, the progress bar and ``note:`` lines on stderr, and the
short text summaries printed without ``--json``. The ``dashboard`` command and ``main`` live in
:mod:`prunelens.analysis.cli`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from prunelens.analysis.cli_args import (check_device, check_method_args, check_output,
                                         finetune_target, folder_arg, objective_of,
                                         parse_curve_points, parse_floats, parse_head_scopes,
                                         parse_params, write_json)
from prunelens.analysis.errors import ParamError, PartialFailure, PrunelensError, shown, terminal


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


def _print_notes(session) -> None:
    """The objective's note (when chosen for the user), data notes and, once evaluation ran,
    truncation notes: one ``note:`` line each."""
    for note in session.notes:
        print(f"note: {terminal(note)}", file=sys.stderr)


def _session(args):
    from prunelens.analysis.data import check_data_spec
    from prunelens.analysis.models import check_model_spec
    from prunelens.analysis.operations import open_session

    check_output(getattr(args, "json", None))
    check_output(getattr(args, "csv", None))
    device = check_device(getattr(args, "device", "cpu"))
    check_data_spec(args.data, args.limit)  # --limit, and the data file exists and can be read
    check_model_spec(args.model)  # not blank; a folder exists, its files and config.json are sane
    # the data is read first: --objective labels on data without labels stops before the model loads
    return open_session(args.model, args.data, args.limit, device=device,
                        objective=getattr(args, "objective", None),
                        announce=lambda: print(f"loading model {shown(args.model)} and data "
                                               f"{shown(args.data)} ...", file=sys.stderr))


def cmd_methods(args) -> int:
    from prunelens.analysis.methods import all_methods

    payload = [m.describe() for m in all_methods().values()]
    if args.json:
        write_json(args.json, "methods", {"methods": payload})
    else:
        for m in payload:
            params = ", ".join(f"{p['name']}={p['default']}" for p in m["params"]) or "no parameters"
            print(f"{m['name']:<12} units: {','.join(m['units']):<28} {params}")
            print(f"{'':<12} {m['title']}: {m['summary']}")
            if m["trains"]:
                print(f"{'':<12} training mode: prunelens train --method {m['name']}")
    return 0


def cmd_score(args) -> int:
    from prunelens.analysis.compare import constant_scores_warning
    from prunelens.analysis.operations import compute_scores

    check_method_args(args.method, args.unit, args.param)
    session = _session(args)
    progress = _progress_printer(not args.quiet)
    result = compute_scores(session, args.method, args.unit, parse_params(args.param), progress,
                            use_store=not args.no_cache)
    payload = result.as_json(session)
    if args.json:
        write_json(args.json, "score", payload)
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
    check_method_args(args.method, args.unit, args.param)
    session = _session(args)
    out = prune(session, args.method, args.sparsity, args.unit, args.scope, parse_params(args.param),
                physical=args.physical, threshold=args.threshold,
                keep_one_per_layer=args.keep_one_per_layer, progress=_progress_printer(not args.quiet))
    capped = out.get("notes", [])
    out["notes"] = session.notes + capped
    _print_notes(session)
    for note in capped:
        print(f"note: {terminal(note)}", file=sys.stderr)
    if args.json:
        write_json(args.json, "prune", out)
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
    params = parse_params(args.param)
    get_method(args.method).validate(params)
    if not args.no_onnx:
        check_onnx_available()
    session = _session(args)
    out = export(session, args.method, args.sparsity, args.out, args.unit, args.scope, params,
                 onnx=not args.no_onnx, progress=_progress_printer(not args.quiet))
    _print_notes(session)
    if args.json:
        write_json(args.json, "export", out)
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
    for sparsity in parse_floats(args.sparsities, "--sparsities"):
        check_sparsity(sparsity)
    session = _session(args)
    rows = curve(session, methods, parse_floats(args.sparsities, "--sparsities"), args.unit, args.scope,
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
            write_json(args.json, "curve", {"rows": rows})
        else:
            for r in rows:
                print(f"{r['method']:<12} {r['sparsity']:>5.2f}  acc {r['accuracy']:.4f}  loss {r['loss']:.4f}  margin {r['margin']:.3f}")
    return 0


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
    write_json(args.json, "finetune", manifest)
    return 0


def _analysis_args(args) -> tuple:
    """What ``precompute`` and ``analyze`` check before anything loads: the methods, the head
    scopes and the curve's points; and the target they fill."""
    from prunelens.analysis.analyze import check_methods
    from prunelens.analysis.sweep.spec import Target

    methods = check_methods([m for m in (args.methods or "").split(",") if m.strip()])
    head_scopes, curve_points = parse_head_scopes(args.head_scopes), parse_curve_points(args.curve_step)
    return methods, head_scopes, curve_points, Target(args.model, args.data, args.limit, objective_of(args))


def cmd_precompute(args) -> int:
    from prunelens.analysis.precompute import precompute

    methods, head_scopes, curve_points, target = _analysis_args(args)
    out_dir = folder_arg(args.out, "--out")
    session = _session(args)
    summary = precompute(session, target, out_dir=out_dir, methods=methods,
                         include_training=not args.skip_training, progress=not args.quiet,
                         head_scopes=head_scopes, curve_sparsities=curve_points)
    write_json(args.json, "precompute", summary)
    return 0


def cmd_analyze(args) -> int:
    from prunelens.analysis.analyze import format_seconds, run_analysis
    from prunelens.analysis.cache import ResultStore
    from prunelens.analysis.sweep import print_report

    methods, head_scopes, curve_points, target = _analysis_args(args)
    store_dir = folder_arg(args.store, "--store")
    session = _session(args)
    if store_dir is not None:
        session.store = ResultStore(user_dir=store_dir)
    done = run_analysis(session, target, methods, training=args.train, progress=not args.quiet,
                        dry_run=args.dry_run, head_scopes=head_scopes, curve_sparsities=curve_points)
    print_report(done.report)
    if not args.dry_run and done.report.count("done"):
        print(f"estimated {format_seconds(done.estimated_seconds)}, took "
              f"{format_seconds(done.report.wall_seconds)}; every page now answers from the store")
    if args.json:
        write_json(args.json, "analyze", done.as_json())
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
    write_json(args.json, "bench", result)
    return 0


def cmd_sweep(args) -> int:
    from prunelens.analysis.cache import ResultStore
    from prunelens.analysis.sweep import SweepFailed, load_spec, print_report, run_sweep

    check_output(args.json)
    store_dir = folder_arg(args.store, "--store")
    spec = load_spec(args.spec)
    store = ResultStore(user_dir=store_dir) if store_dir is not None else ResultStore()
    report = run_sweep(spec, store, args.executor, args.workers, args.threads, args.address,
                       args.device, args.gpus_per_task, progress=not args.quiet, dry_run=args.dry_run)
    print_report(report)
    if args.json:
        write_json(args.json, "sweep", report.as_json())
    failed = report.count("failed")
    if failed:
        raise SweepFailed(f"{failed} of {len(report.records)} tasks failed twice (listed above); "
                          "everything else is stored: rerun the same command to try them again")
    return 0


def cmd_train(args) -> int:
    from prunelens.analysis.training import get_trainer, train_command

    check_method_args(args.method, None, args.param, training=True)
    reason = get_trainer(args.method).is_compatible(args.objective or "labels")
    if args.objective and reason:  # refused before anything loads
        raise ParamError(f"training mode '{args.method}' cannot run here: {reason}")
    session = _session(args)
    out = train_command(session, args.method, parse_params(args.param),
                        progress=_progress_printer(not args.quiet), use_store=not args.no_cache)
    if args.json:
        write_json(args.json, "train", out)
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
