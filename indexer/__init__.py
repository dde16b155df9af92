"""Lookbook's index stage: read embeddings.h5, build and search a FAISS index, vote, evaluate, report.

- ``embeddings_file.py``, ``index.py``, ``approximate.py``, ``knn.py``: the vectors, the index over them,
  approximate search, and the kNN vote.
- ``evaluation/``: kNN accuracy and retrieval metrics.
- ``report/``: `manage.py evaluate`'s report, with its pictures.
- ``captions/``: captions from the neighbours' titles and attributes, and caption metrics.

Works on numpy arrays, HDF5 and faiss only; it never imports torch or ``embedder``.
"""
