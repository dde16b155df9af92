"""kNN accuracy and retrieval metrics: the protocol, the metrics and looking into one class."""
