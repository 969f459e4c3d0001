"""prunelens: which attention heads and modules of a transformer encoder matter, under several
published pruning methods, side by side.

The one import package. ``prunelens.analysis`` (all numerics, never imports streamlit) and
``prunelens.dashboard`` (Streamlit pages, no numerics) are mapped from the repository's top-level
``analysis/`` and ``dashboard/`` folders by ``pyproject.toml``'s ``package-dir``. The version lives
in ``pyproject.toml`` only; ``__version__`` reads it from the installed distribution's metadata
(in a source checkout, from that checkout's ``pyproject.toml``).
"""

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


def _checkout_version(pyproject: Path) -> str:
    """The version written in a source checkout's pyproject.toml (its one place)."""
    import tomllib

    return tomllib.loads(pyproject.read_text())["project"]["version"]


# In a source checkout (an editable install, a git worktree of it) the subpackages are this folder's
# siblings: look for them there first, so a checkout always runs its own analysis/ and dashboard/
# (an editable install's finder would otherwise serve the checkout it was installed from). An
# installed wheel has them inside this folder and no pyproject.toml above it.
_checkout = Path(__file__).resolve().parent.parent
if (_checkout / "pyproject.toml").is_file() and (_checkout / "analysis" / "__init__.py").is_file():
    __path__.append(str(_checkout))
    # the checkout's own version: an editable install's metadata keeps the version it was
    # installed with until it is reinstalled
    __version__ = _checkout_version(_checkout / "pyproject.toml")
else:
    try:
        __version__ = version("prunelens")
    except PackageNotFoundError:  # copied files that were never installed
        __version__ = "0+unknown"
