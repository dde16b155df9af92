"""The GRU caption annotator: its vocabulary, model and training on stored embeddings."""
