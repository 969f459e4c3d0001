"""``python -m prunelens.analysis`` runs the prunelens command line (as ``python -m prunelens``)."""

from prunelens.analysis.cli import main

raise SystemExit(main())
