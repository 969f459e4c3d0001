"""``python -m analysis`` runs the prunelens command line."""

from analysis.cli import main

raise SystemExit(main())
