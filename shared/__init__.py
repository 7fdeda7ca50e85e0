"""Marketplace review-photo classifier: CLIP and OCR base learners stacked by a RandomForest."""
__version__ = "0.1.0"
