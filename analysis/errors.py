"""User-facing error types: each carries one line saying what is wrong and what to do.

The CLI prints them as ``error: <message>`` with exit code 2; the dashboard shows them as a
message on the page. Anything else that escapes is a bug and keeps its traceback.
"""


class PrunelensError(Exception):
    """Base class for errors caused by user input or the environment, not by a bug."""


class ModelError(PrunelensError):
    """The model spec cannot be loaded or is not a supported architecture."""


class DataError(PrunelensError):
    """The data spec or file cannot be read or does not fit the model."""


class ParamError(PrunelensError):
    """A method, unit, sparsity or parameter value is not valid."""


class StoreError(PrunelensError):
    """The result store cannot be used at all (individual faulty entries are only warned about)."""
