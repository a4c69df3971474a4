"""Everything the CLI shows: rich tables and text made from the data the libraries return.

Libraries return dataclasses and frames; only this package turns them into words on a
terminal, one module per part of the data path (stages, versions, training, inference).
"""
