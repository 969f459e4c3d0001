"""Open every dashboard page on a model and data set, and say whether each answered from the store.

After ``prunelens analyze --model M --data D --store S``, every page should open without computing
anything the store could hold: this opens each page (Streamlit's AppTest, in this process, as a
shared link would) with ``PRUNELENS_CACHE=S``, and prints per page the seconds it took, the store
entries it added (0 = everything it needed was stored), any message that an expensive result is
not in the store (the page would wait for a Compute click) and any error or exception.

    python benchmarks/pages_from_store.py --model DIR --data DIR/dev.csv --store S [--json F]

The Attention page draws the attention of one typed sentence, which no store holds: its seconds
are that one forward pass (its head scores still come from the store).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PAGES = ("model_data", "importance", "prune", "compare", "spectral", "attention", "training")


def entries(store: Path) -> int:
    return sum(1 for _ in store.glob("*/*.json"))


def open_page(page: str, model: str, data: str, timeout: int):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=timeout)
    at.query_params["model"] = model
    at.query_params["data"] = data
    at.session_state["prunelens.page"] = page
    at.run()
    return at


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--store", required=True, type=Path)
    parser.add_argument("--timeout", type=int, default=900)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    os.environ.setdefault("STREAMLIT_LOGGER_LEVEL", "error")  # AppTest's bare-mode chatter
    os.environ["PRUNELENS_CACHE"] = str(args.store)
    roots = {str(Path(args.model).resolve().parent), str(Path(args.data).resolve().parent)}
    os.environ.setdefault("PRUNELENS_DATA_ROOTS", os.pathsep.join(sorted(roots)))
    rows = []
    open_page("model_data", args.model, args.data, args.timeout)  # loads the model once (cached)
    for page in PAGES:
        before = entries(args.store)
        start = time.perf_counter()
        at = open_page(page, args.model, args.data, args.timeout)
        seconds = time.perf_counter() - start
        # a page that waits for a Compute click says the entry is "not in the store"
        waiting = [m.value for m in [*at.info, *at.warning] if "not in the store" in m.value.lower()]
        rows.append({"page": page, "seconds": round(seconds, 2), "new_entries": entries(args.store) - before,
                     "waiting_for_a_click": waiting,
                     "errors": [e.value for e in at.error], "exceptions": [e.value for e in at.exception]})
        problems = rows[-1]["errors"] + rows[-1]["exceptions"]
        print(f"{page:12} {seconds:8.2f} s  new store entries: {rows[-1]['new_entries']}"
              f"{'  NOT STORED: ' + str(waiting) if waiting else ''}"
              f"{'  ERRORS: ' + str(problems) if problems else ''}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
