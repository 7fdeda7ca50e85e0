"""Feature extractors (CLIP embeddings, OCR text) and the feature cache."""
