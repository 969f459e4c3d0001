"""prunelens analysis layer: models, gates, data, evaluation, pruning, methods and the store.

Never imports streamlit; the dashboard and the CLI both call into this package.
"""

__version__ = "0.1.0"
