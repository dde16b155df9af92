"""Lookbook's index stage: read embeddings.h5, build and search a FAISS index, vote, evaluate, report.

Works on numpy arrays, HDF5 and faiss only; it never imports torch or ``embedder``.
Import the modules you need (``indexer.index``, ``indexer.knn``, ...); this package imports nothing.
"""
