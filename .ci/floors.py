"""Print pyproject.toml's dependency floors as pip constraints (``name==floor``, one a line).

Used by ``.ci/floors``: every dependency must state a floor (``>=``, ``==`` or ``~=``); the
floors installed together are what the smoke subset runs on. A dependency without one is an
error, so a new dependency cannot slip in untested.
"""

import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent


def floors(deps: list[str]) -> list[str]:
    pins, missing = [], []
    for text in deps:
        req = Requirement(text)
        low = [s.version for s in req.specifier if s.operator in (">=", "==", "~=")]
        if not low:
            missing.append(req.name)
            continue
        pins.append(f"{req.name}=={low[0]}")
    if missing:
        sys.exit(f"error: no floor for {', '.join(missing)} in pyproject.toml (give each a >= bound)")
    return pins


if __name__ == "__main__":
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    print("\n".join(floors(project["dependencies"])))
