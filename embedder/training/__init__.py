"""Training the embedder: P×K batches, triplet and classification losses, augmentation, the loop, weight soups."""
