"""Catalog readers, the embedding network, and the extraction of catalog embeddings."""
