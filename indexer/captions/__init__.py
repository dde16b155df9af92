"""Captions from the neighbours: title consensus, attribute votes, and caption metrics."""
