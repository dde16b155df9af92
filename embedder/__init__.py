"""Lookbook's embedding stage: catalog images in, one unit vector per image out.

- ``catalogs/``: the catalog readers (Fashion-MNIST, DeepFashion, Fashion Product Images), sample catalogs.
- ``training/``: triplet-loss fine-tuning of the network, and weight soups.
- ``inference/``: the network prepared for inference, and a whole catalog into embeddings.h5.
- ``captioner/``: the GRU caption annotator, trained on stored embeddings.
- ``model.py``, ``checkpoint.py``, ``transforms.py``, ``weights.py``: the network, its saved form, its
  image preprocessing and its starting weights, which every stage shares.
"""
