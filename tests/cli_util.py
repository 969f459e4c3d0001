"""Running the command line in-process and reading its one ``error:`` line: the helpers the
promise tests share (``tests/promises``)."""

from __future__ import annotations

import re


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """``prunelens argv`` in-process: (exit code, stdout, stderr)."""
    from prunelens.analysis.cli import main

    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse errors
        rc = exc.code
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def one_error(rc: int, err: str, pattern: str) -> str:
    """Exit 2, exactly one ``error:`` line matching ``pattern``, no traceback or internal error,
    and the line does not repeat an overlong input."""
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert rc == 2, (rc, err[-2000:])
    assert len(lines) == 1, err[-2000:]
    assert re.search(pattern, lines[0]), lines[0][:600]
    assert "Traceback" not in err and "internal error" not in err
    assert len(lines[0]) < 600, "the error line repeats an overlong input"
    return lines[0]
