"""Method-specific panels: a registry ``method name -> MethodView``.

A :class:`MethodView` may have

- ``about(session, method, unit, params, scores, key)``: drawn by the Importance page inside its
  "About this method" expander, below the method's summary and paper;
- ``run(session, run, key)``: the structured display of one finished training run (Training runs
  page, and the "About" panels that show a method's latest run);
- ``workload(params, n_eval) -> (training examples, evaluated examples)``: what a training run
  with these parameters processes, for the run-time estimate shown before starting.

A method without a registered view (a newly added one) gets :func:`generic_about` /
:func:`generic_run`, so it still appears. Numbers come from ``analysis/``; this module only
lays them out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd
import streamlit as st

from analysis.methods import all_methods
from analysis.methods.base import Method
from analysis.operations import Session
from analysis.pruning import select, sparsity_of
from analysis.training import finished_runs
from dashboard import controls, escape, figures, state

AboutFn = Callable[[Session, Method, str, dict, Any, str], None]
RunFn = Callable[[Session, dict, str], None]


@dataclass(frozen=True)
class MethodView:
    about: AboutFn | None = None
    run: RunFn | None = None
    headline: Callable[[dict], str] | None = None  # one line for run listings


VIEWS: dict[str, MethodView] = {}


def register(name: str, about: AboutFn | None = None, run: RunFn | None = None,
             headline: Callable[[dict], str] | None = None) -> MethodView:
    VIEWS[name] = MethodView(about, run, headline)
    return VIEWS[name]


def view_for(name: str) -> MethodView:
    return VIEWS.get(name, MethodView())


# ----------------------------------------------------------------------------------------------
# entry points used by the pages


def render_about(session: Session, method: Method, unit: str, params: dict, scores: Any = None,
                 key: str = "about") -> None:
    """Summary, paper, declared parameters, then the method's own panel."""
    st.markdown(f"**{method.title or method.name}** — {method.summary}")
    if method.paper:
        st.caption(f"Paper: {method.paper}")
    if method.deviations:
        st.markdown("##### What this method really computes here (differences from the paper and its code)")
        st.dataframe(pd.DataFrame([d.as_dict() for d in method.deviations]), hide_index=True)
    view = view_for(method.name)
    with state.guard(stop=False):
        (view.about or generic_about)(session, method, unit, params, scores, key)


def render_run(session: Session, run: dict, key: str = "run") -> None:
    """One finished training run: the method's structured view, then its JSON download."""
    name = str(run.get("method", ""))
    st.caption(escape.markdown(_run_caption(run)))  # names data of whichever session ran it
    with state.guard(stop=False):
        (view_for(name).run or generic_run)(session, run, key)
    controls.download_json(run, f"run_{name}", f"{key}.json", label="Run (JSON)")


def run_time_estimate(session: Session, method_name: str, params: dict) -> dict | None:
    """``{"seconds", "train_examples", "eval_examples"}`` for a run with ``params``, or None
    (the trainer's own cost model, :meth:`analysis.methods.base.Trainer.estimate`)."""
    from analysis.training import get_trainer

    return get_trainer(method_name).estimate(session.loaded, params, len(session.data))


def headline(run: dict) -> str:
    """A one-line result of a finished run (its accuracy against its reference), or ''."""
    fn = view_for(str(run.get("method", ""))).headline or _generic_headline
    try:
        return fn(run)
    except (KeyError, TypeError, ValueError):
        return ""


def _acc(d: dict | None) -> str:
    return f"{d['accuracy']:.3f}" if d and d.get("accuracy") is not None else "?"


def _generic_headline(run: dict) -> str:
    ev = run.get("evaluation")
    return f"accuracy {_acc(ev)}" if isinstance(ev, dict) and "accuracy" in ev else ""


def _snip_headline(run: dict) -> str:
    text = (f"accuracy {_acc(run.get('evaluation'))} after SN training "
            f"(without: {_acc(run.get('evaluation_without_training'))})")
    at_half = [r for r in run.get("pruned") or [] if r.get("unit") == "head" and r.get("sparsity") == 0.5]
    if at_half and "control" in at_half[0]:
        r = at_half[0]
        text += (f"; 50% heads pruned: {_acc(r['trained'])} vs λ=0 {_acc(r['control'])}, "
                 f"untrained {_acc(r['untrained'])}")
    return text


def _admm_headline(run: dict) -> str:
    ev = run.get("evaluation") or {}
    return (f"{run.get('projection', '')}: ADMM {_acc(ev.get('admm'))}, one-shot {_acc(ev.get('oneshot'))}, "
            f"dense {_acc(ev.get('dense'))}")


def _pins_headline(run: dict) -> str:
    runs = run.get("runs") or {}
    if "platon" in runs:
        text = f"PLATON {_acc(runs['platon'].get('evaluation'))}"
    else:
        text = f"PINS+SR {_acc((runs.get('pins_self_reg') or {}).get('evaluation'))}"
    if "pins_no_self_reg" in runs:
        text += f", no SR {_acc(runs['pins_no_self_reg'].get('evaluation'))}"
    if run.get("baseline"):
        text += f", magnitude {_acc(run['baseline'].get('evaluation'))}"
    return text + f", unpruned {_acc(run.get('base'))}"


def runs_of(session: Session, method_name: str) -> list[dict]:
    """Finished runs of one method for the loaded model (newest first when dated)."""
    runs = [r for r in finished_runs(session.store, session.loaded.fingerprint)
            if r.get("method") == method_name]
    same_data = [r for r in runs if r.get("data", {}).get("fingerprint") == session.data.fingerprint]
    return same_data or runs


def _run_caption(run: dict) -> str:
    params = ", ".join(f"{k}={v}" for k, v in (run.get("params") or {}).items())
    data = run.get("data", {})
    return (f"{run.get('method')} run · {run.get('seconds', '?')} s · evaluated on "
            f"{data.get('name', '?')} ({data.get('n', '?')} examples) · {params}")


def _latest_run(session: Session, method: Method, key: str) -> None:
    """The method's finished runs (pick one) drawn with its run view."""
    runs = runs_of(session, method.name)
    st.markdown("##### Finished training runs")
    if not runs:
        st.caption(f"No finished {method.name} training run for this model yet "
                   "(start one on the Training runs page).")
        return
    pick = 0
    if len(runs) > 1:
        pick = st.selectbox("Run", list(range(len(runs))), key=f"{key}.runpick",
                            format_func=lambda i: _run_caption(runs[i]))
    render_run(session, runs[pick], key=f"{key}.run")


# ----------------------------------------------------------------------------------------------
# generic views


def generic_about(session: Session, method: Method, unit: str, params: dict, scores: Any,
                  key: str) -> None:
    rows = [{"parameter": p.name, "value": params.get(p.name, p.default), "default": p.default,
             "help": p.help} for p in method.params]
    if rows:
        st.dataframe(pd.DataFrame(rows).astype({"value": str, "default": str}), hide_index=True)
    st.caption(f"Units: {', '.join(method.units)} · default scope {method.default_scope} · "
               f"default sparsity {method.default_sparsity:.0%}"
               + (" · expensive (cached)" if method.expensive else "")
               + (" · has a training mode" if method.trainer else ""))
    if method.trainer is not None:
        _latest_run(session, method, key)


def generic_run(session: Session, run: dict, key: str) -> None:
    """Any trainer's run, read as one :class:`~analysis.run_result.RunResult` (every stored shape
    normalised): its variants as a table and bars, its histories, its unit scores, the rest."""
    from analysis.run_result import normalise

    result = normalise(run)
    rows = result.variant_rows()
    if rows:
        st.dataframe(pd.DataFrame(rows), hide_index=True)
        controls.show_figure(figures.evaluation_bars(rows, label_key="variant", title="Variants after the run"),
                             "variants", f"{key}.variants")
    if result.histories:
        fields = sorted({f for hist in result.histories.values() for h in hist for f in h
                         if f != "step" and isinstance(h[f], int | float)})
        controls.show_figure(figures.history_panels(result.histories, fields[:4]), "history", f"{key}.history")
    for unit, scores in result.scores.items():
        if unit == "head":
            fig = figures.head_heatmap(scores, f"Head scores of the run ({result.method})")
        elif unit in ("attention", "ffn"):
            fig = figures.block_bars(scores, unit, f"{unit} block scores of the run")
        elif unit == "neuron":
            fig = figures.neuron_distribution(scores, "Neuron scores of the run")
        else:
            continue
        controls.show_figure(fig, f"run_scores_{unit}", f"{key}.scores.{unit}")
    for note in result.notes:
        st.caption(escape.markdown(note))
    if result.extras:
        with st.expander("Everything else the run returned"):
            st.json(result.extras, expanded=False)


# ----------------------------------------------------------------------------------------------
# snip


def _unit_maps(unit: str, left, right, titles: tuple[str, str], title: str, **kwargs):
    """Heads: two heatmaps side by side; blocks: grouped bars per layer."""
    if unit in ("head", "neuron"):
        return figures.paired_heatmaps(left, right, titles, title, x_title=unit, **kwargs)
    return figures.grouped_bars({titles[0]: left, titles[1]: right}, list(range(len(left))), title,
                                y_title="norm", x_title="layer")


def _flat(scores) -> list[float]:
    return [float(v) for row in scores for v in (row if isinstance(row, list) else [row])]


def snip_about(session: Session, method: Method, unit: str, params: dict, scores: Any, key: str) -> None:
    st.markdown("##### Absolute vs relative function norms")
    st.caption("Absolute: mean ||F(x)|| over tokens. Relative: divided by ||x|| of the residual "
               "stream the module adds to, so modules in layers with large activations are not "
               "favoured. The other parameters are the ones chosen above.")
    absolute = state.cheap_scores(session, "snip", unit, {**params, "relative": False})
    relative = state.cheap_scores(session, "snip", unit, {**params, "relative": True})
    controls.show_figure(_unit_maps(unit, absolute, relative, ("absolute ||F(x)||", "relative ||F(x)||/||x||"),
                                    f"snip {unit} norms"), f"snip_{unit}_abs_rel", f"{key}.snip.absrel")

    st.markdown("##### Pruning is a threshold on the norm")
    current = relative if params.get("relative") else absolute
    values = _flat(current)
    low, high = min(values), max(values)
    if high <= low:
        high = low + 1e-6
    slider = f"{key}.snip.threshold"
    state.bind(slider, (low + high) / 2)
    st.session_state[slider] = min(max(float(st.session_state[slider]), low), high)
    threshold = st.slider(f"Threshold ({'relative' if params.get('relative') else 'absolute'} norm units)",
                          float(low), float(high), step=(high - low) / 200, format="%.4g", key=slider)
    mask = select(current, threshold=threshold)
    removed = sparsity_of(mask)
    controls.show_figure(figures.histograms({f"{unit} norms": values}, f"distribution of snip {unit} norms", "norm",
                                            bins=30, vline=threshold),
                         f"snip_{unit}_hist", f"{key}.snip.hist")
    st.caption(f"{removed:.0%} of the {len(values)} {unit} units lie below {threshold:.4g} and would be "
               "pruned (the Prune page's threshold mode evaluates it).")
    _latest_run(session, method, key)


def snip_run(session: Session, run: dict, key: str) -> None:
    before, after = run.get("scores_without_training") or {}, run.get("scores") or {}
    kind = "relative" if after.get("relative") else "absolute"
    ev, ev0 = run.get("evaluation") or {}, run.get("evaluation_without_training") or {}
    table = [{"model": "without SN training (as loaded)", **_pick(ev0)},
             {"model": "after SN + identity-prior training", **_pick(ev)}]
    control = run.get("control") or {}
    if control.get("evaluation"):
        table.append({"model": "λ = 0 control (same steps and SN, no identity prior)",
                      **_pick(control["evaluation"])})
    st.dataframe(pd.DataFrame(table), hide_index=True)
    pruned = run.get("pruned") or []
    if pruned:  # the paper's claim: SN + identity prior make the trained model prune better
        st.markdown("**Pruned by its own function norms** (lowest first, global): accuracy of each "
                    "model at the same sparsity, on the same sentences")
        names = [n for n in ("trained", "untrained", "control") if n in pruned[0]]
        label = {"trained": "SN + identity prior", "untrained": "untrained (as loaded)",
                 "control": "λ = 0 control"}
        st.dataframe(pd.DataFrame([{"unit": r["unit"], "sparsity": f"{r['sparsity']:.0%}",
                                    **{label[n]: round(r[n]["accuracy"], 4) for n in names}}
                                   for r in pruned]), hide_index=True)
        st.caption("One seed: differences of a point or two are within noise "
                   "(docs/FIDELITY.md gives the multi-seed comparison where it has one).")
    controls.show_figure(figures.evaluation_bars(table, ("accuracy", "loss", "margin"), "model",
                                                 "Evaluation without vs with SN training"),
                         "snip_eval", f"{key}.snip.eval")
    st.markdown(f"**Scores with SN training vs without** ({kind} function norms)")
    if "head" in after and "head" in before:
        controls.show_figure(figures.paired_heatmaps(
            before["head"], after["head"], ("without training", "with SN training"),
            "Head function norms", shared_scale=True), "snip_heads_train", f"{key}.snip.heads")
    for unit in ("attention", "ffn"):
        if unit in after and unit in before:
            controls.show_figure(figures.grouped_bars(
                {"without training": before[unit], "with SN training": after[unit]},
                list(range(len(after[unit]))), f"{unit} block function norms", "norm", "layer"),
                f"snip_{unit}_train", f"{key}.snip.{unit}")
    history = run.get("history") or []
    if history:
        controls.show_figure(figures.history_panels({"training": history}, ("loss", "task_loss", "penalty")),
                             "snip_history", f"{key}.snip.history")
    sigma = run.get("sigma") or {}
    if sigma.get("before") and sigma.get("after"):
        labels = [f"L{r['layer']} {r['matrix']}" for r in sigma["before"]]
        controls.show_figure(figures.grouped_bars(
            {"before": [r["sigma"] for r in sigma["before"]],
             "after": [r["sigma"] for r in sigma["after"]]}, labels,
            "σ_max per matrix before / after training", "σ_max"), "snip_sigma", f"{key}.snip.sigma")
    note = (run.get("train_data") or {}).get("note")
    if note:
        st.caption(escape.markdown(f"Trained on: {note}."))


def _pick(d: dict, keys=("accuracy", "accuracy_se", "loss", "loss_se", "margin", "margin_se", "n")) -> dict:
    return {k: d.get(k) for k in keys if k in d}


# ----------------------------------------------------------------------------------------------
# admm / admm-quant


def admm_about(session: Session, method: Method, unit: str, params: dict, scores: Any, key: str) -> None:
    from analysis.layout import MATRICES
    from analysis.methods.admm import DEFAULT_PATTERNS, accuracy_by_pattern, pattern_of

    inv = session.loaded.inventory
    if "n" in params and "m" in params:
        n, m = params["n"], params["m"]
        st.markdown(f"##### The {n}:{m} pattern of one matrix")
        c1, c2 = st.columns(2)
        layer = c1.selectbox("Layer", list(range(inv.layers)), key=f"{key}.admm.layer")
        matrix = c2.selectbox("Matrix", list(MATRICES), key=f"{key}.admm.matrix")
        with state.guard(stop=False):
            window = pattern_of(session.loaded, layer, matrix, n, m, rows=16, cols=32)
            controls.show_figure(figures.pattern_heatmap(
                window.mask, window.weights, n, m, window.row_start, window.col_start,
                f"layer {layer} {matrix}: {n}:{m} one-shot magnitude pattern (top-left 16 × 32)"),
                f"admm_pattern_L{layer}_{matrix}", f"{key}.admm.pattern")
    else:
        st.caption("k-bit quantization keeps every weight; it rounds each to a per-channel grid.")

    st.markdown("##### Per-head share of surviving weight norm")
    shares = state.cheap_scores(session, method.name, "head", params)
    controls.show_figure(figures.head_heatmap(shares, "share of each head's squared weight norm that "
                                              "survives the one-shot projection", "share"),
                         f"{method.name}_shares",
                         f"{key}.admm.shares")

    st.markdown("##### Accuracy for several N:M choices")
    st.caption("Every constrained matrix of a copy of the model projected to each N:M (one-shot "
               "magnitude, no ADMM), evaluated on the loaded data.")
    patterns = [list(p) for p in DEFAULT_PATTERNS]
    rows = state.stored(session, "pattern-accuracy", "admm", "", {"patterns": patterns})
    rows = rows["rows"] if rows else None  # the store keeps them once computed
    if rows is None and st.button("Evaluate " + ", ".join(f"{n}:{m}" for n, m in DEFAULT_PATTERNS),
                                   key=f"{key}.admm.acc"):
        bar, progress = controls.progress_sink("Projecting and evaluating…")
        rows = accuracy_by_pattern(session, DEFAULT_PATTERNS, progress=progress)
        bar.empty()
    if rows:
        table = [{"pattern": r["pattern"], "sparsity": r["sparsity"], **_pick(r)} for r in rows]
        st.dataframe(pd.DataFrame(table), hide_index=True)
        controls.show_figure(figures.evaluation_bars(table, ("accuracy", "loss"), "pattern",
                                                     "Accuracy and loss by N:M pattern"),
                             "admm_patterns", f"{key}.admm.accfig")
    _latest_run(session, method, key)


ADMM_ORDER = ("dense", "oneshot", "oneshot_finetuned", "admm_projected", "admm")  # the store sorts keys


def admm_run(session: Session, run: dict, key: str) -> None:
    labels = run.get("labels") or {}
    evaluation = run.get("evaluation") or {}
    order = [k for k in ADMM_ORDER if k in evaluation] + [k for k in evaluation if k not in ADMM_ORDER]
    table = [{"model": labels.get(name, name), **_pick(evaluation[name]),
              **{f"Δ {k}": v for k, v in (evaluation[name].get("delta") or {}).items()}}
             for name in order]
    st.dataframe(pd.DataFrame(table), hide_index=True)
    controls.show_figure(figures.evaluation_bars(table, ("accuracy", "loss", "margin"), "model",
                                                 f"Dense vs one-shot vs ADMM ({run.get('projection', '')})"),
                         "admm_eval", f"{key}.admm.eval")
    history = run.get("history") or []
    if history:
        st.caption(f"||W − Z|| at the start: {run.get('initial_residual', float('nan')):.4g}")
        controls.show_figure(figures.history_panels({"ADMM": history}, ("residual", "loss", "rho"),
                                                    xkey="iteration", title="ADMM iterations"),
                             "admm_history", f"{key}.admm.history")
    if run.get("finetune_history"):
        controls.show_figure(figures.history_chart(run["finetune_history"], "SR-STE fine-tune loss"),
                             "admm_finetune", f"{key}.admm.finetune")
    shares, oneshot = run.get("shares") or {}, run.get("shares_oneshot") or {}
    if "head" in shares and "head" in oneshot:
        controls.show_figure(figures.paired_heatmaps(
            oneshot["head"], shares["head"], ("one-shot projection", "after ADMM"),
            "Per-head share of surviving weight norm (one colour scale)", shared_scale=True),
            "admm_shares", f"{key}.admm.shares")
    for unit in ("attention", "ffn"):
        if unit in shares and unit in oneshot:
            controls.show_figure(figures.grouped_bars(
                {"one-shot projection": oneshot[unit], "after ADMM": shares[unit]},
                list(range(len(shares[unit]))), f"{unit} block: share of surviving weight norm",
                "share", "layer"), f"admm_{unit}_shares", f"{key}.admm.{unit}")
    if run.get("constraint"):
        st.caption("Constraint check on the final weights: "
                   + ", ".join(f"{k} = {v}" for k, v in run["constraint"].items()))


# ----------------------------------------------------------------------------------------------
# pins

PINS_RUNS = {"pins_self_reg": "PINS with self-regularization",
             "pins_no_self_reg": "PINS without self-regularization",
             "platon": "PLATON (no self-regularization)"}


def pins_about(session: Session, method: Method, unit: str, params: dict, scores: Any, key: str) -> None:
    if method.name == "platon":
        st.caption("Live scores smooth |θ·g| over a few batches of the training split without any "
                   "update (Ī·U ≥ 0, summed to units): PINS without its η·g² term. The training mode "
                   "prunes weights iteratively against gradual magnitude pruning.")
    else:
        st.caption("Live scores smooth |S| = |−θ·g + η·g²| over a few batches of the training split "
                   "without any update (Ī·U ≥ 0, summed to units; PLATON is the same with η = 0). The "
                   "training mode prunes weights iteratively; its runs compare PINS with and without "
                   "self-regularization against magnitude pruning.")
    _latest_run(session, method, key)


def pins_run(session: Session, run: dict, key: str) -> None:
    rows = []
    if run.get("base"):
        rows.append({"model": "unpruned", **_pick(run["base"]), "weight sparsity": 0.0})
    parts = _pins_parts(run)
    for name, part in parts.items():
        rows.append({"model": PINS_RUNS.get(name, name), **_pick(part.get("evaluation") or {}),
                     "weight sparsity": part.get("weight_sparsity")})
    baseline = run.get("baseline")
    if baseline:
        oneshot = str(baseline.get("training", "")).startswith("none")
        rows.append({"model": "magnitude, one-shot (no training)" if oneshot
                     else "magnitude, gradual (same schedule and budget)",
                     **_pick(baseline.get("evaluation") or {}),
                     "weight sparsity": baseline.get("weight_sparsity")})
    st.dataframe(pd.DataFrame(rows), hide_index=True)
    controls.show_figure(figures.evaluation_bars(rows, ("accuracy", "loss"), "model",
                                                 "With vs without self-regularization vs magnitude"),
                         "pins_eval", f"{key}.pins.eval")
    gain = run.get("self_reg_gain")
    if gain:
        st.caption("Gain of self-regularization: " + ", ".join(f"Δ {k} {v:+.4f}" for k, v in gain.items()))
    histories = {PINS_RUNS.get(n, n): p["history"] for n, p in parts.items() if p.get("history")}
    if baseline and baseline.get("history"):
        histories["magnitude (gradual)"] = baseline["history"]
    if histories:
        controls.show_figure(figures.history_panels(histories, ("loss", "task_loss", "self_reg_loss",
                                                                "sparsity")),
                             "pins_history", f"{key}.pins.history")
    own = next(iter(parts), "")  # the method's own run: PINS + self-reg, or PLATON
    main = parts.get(own) or {}
    if main.get("layer_sparsity"):
        st.caption(f"Realized weight sparsity {main.get('weight_sparsity', 0):.1%} "
                   f"({main.get('pruned_weights', 0):,} of {main.get('total_weights', 0):,} weights), "
                   f"exact zeros {main.get('zero_fraction', 0):.1%}.")
        controls.show_figure(figures.sparsity_heatmap(main["layer_sparsity"],
                                                      main.get("layer_sparsity_columns") or [],
                                                      "Realized sparsity per layer and matrix "
                                                      f"({'PLATON' if own == 'platon' else 'PINS + self-reg'})"),
                             "pins_sparsity", f"{key}.pins.sparsity")
    for note in run.get("notes") or []:
        st.caption(note)


def _pins_parts(run: dict) -> dict:
    """The run's trained models, self-regularized first (the store sorts keys)."""
    runs = run.get("runs") or {}
    return {**{k: runs[k] for k in PINS_RUNS if k in runs}, **{k: v for k, v in runs.items() if k not in PINS_RUNS}}


# ----------------------------------------------------------------------------------------------
# smp


def smp_about(session: Session, method: Method, unit: str, params: dict, scores: Any, key: str) -> None:
    st.markdown("##### Kept heads at the paper's default: the top half of every layer")
    if scores is None or unit != "head":
        st.caption("Compute the head scores above to see which heads SMP keeps.")
        return
    mask = select(scores, sparsity=0.5, scope="layer")
    controls.show_figure(figures.mask_heatmap(mask.tolist(), "head", "Top half per layer (green = kept)"),
                         "smp_top_half", f"{key}.smp.mask")
    table = [{"layer": layer, "kept heads": ", ".join(str(h) for h, keep in enumerate(row) if keep),
              "kept": int(sum(row)), "of": len(row)} for layer, row in enumerate(mask.tolist())]
    st.dataframe(pd.DataFrame(table), hide_index=True)


register("snip", about=snip_about, run=snip_run, headline=_snip_headline)
register("admm", about=admm_about, run=admm_run, headline=_admm_headline)
register("admm-quant", about=admm_about, run=admm_run, headline=_admm_headline)
register("pins", about=pins_about, run=pins_run, headline=_pins_headline)
register("platon", about=pins_about, run=pins_run, headline=_pins_headline)
register("smp", about=smp_about)


def registered() -> dict[str, MethodView]:
    """Every registered method with its view (the generic one where none is registered)."""
    return {name: view_for(name) for name in all_methods()}
