"""Method-specific panels: a registry ``method name -> MethodView``, one module per method.

A :class:`MethodView` may have

- ``about(session, method, unit, params, scores, key)``: drawn by the Importance page inside its
  "About this method" expander, below the method's summary, paper and deviation table;
- ``run(session, run, key)``: the structured display of one finished training run (Training runs
  page, and the "About" panels that show a method's latest run);
- ``headline(run)``: one line for run listings.

A method without a registered view (a newly added one) gets :func:`generic_about` /
:func:`generic_run` (``common.py``): its declared parameters, and any trainer's run read as one
:class:`~prunelens.analysis.run_result.RunResult`, so a new trainer gets a real view, not raw JSON. A
method that needs more adds ``dashboard/method_views/<method>.py`` calling :func:`register` and
lists it below. Numbers come from ``analysis/``; these modules only lay them out.
"""

from prunelens.dashboard.method_views.common import (MethodView, VIEWS, generic_about, generic_run, headline,
                                           register, registered, render_about, render_run, run_time_estimate,
                                           runs_of, view_for)
from prunelens.dashboard.method_views import admm, pins, smp, snip  # noqa: E402  each registers its panels

__all__ = ["MethodView", "VIEWS", "admm", "generic_about", "generic_run", "headline", "pins", "register",
           "registered", "render_about", "render_run", "run_time_estimate", "runs_of", "smp", "snip", "view_for"]
