"""The embedder at work: the network prepared for inference (torch or ONNX Runtime), and a whole catalog into embeddings.h5."""
