"""Satsang workbench: curate contemplative dialogue corpora into versioned datasets."""
__version__ = "0.1.0"
