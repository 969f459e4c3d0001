"""prunelens analysis layer (``prunelens.analysis``): models, gates, data, evaluation, pruning,
methods and the store.

Never imports streamlit; the dashboard and the CLI both call into this package. The version is
``prunelens.__version__``.
"""
