"""``python -m prunelens`` runs the prunelens command line."""

from prunelens.analysis.cli import main

raise SystemExit(main())
