"""``prunelens sweep SPEC``: a grid of analyses and training runs, one store entry per task.

- :mod:`prunelens.analysis.sweep.spec`: the TOML spec, checked before anything loads;
- :mod:`prunelens.analysis.sweep.tasks`: the kinds of task and the expansion of a spec into store keys;
- :mod:`prunelens.analysis.sweep.worker`: computing one task wherever it runs (models kept per worker);
- :mod:`prunelens.analysis.sweep.executors`: in-process, a local process pool, or Ray;
- :mod:`prunelens.analysis.sweep.driver`: planning, skipping what is stored, retries, progress, summary.

``docs/SWEEPS.md`` documents the spec; ``docs/SCALING.md`` running it on a Ray cluster.
"""

from prunelens.analysis.sweep.driver import SweepFailed, SweepReport, plan_sweep, print_report, run_sweep
from prunelens.analysis.sweep.spec import SweepSpec, load_spec, parse_spec

__all__ = ["SweepFailed", "SweepReport", "SweepSpec", "load_spec", "parse_spec", "plan_sweep",
           "print_report", "run_sweep"]
