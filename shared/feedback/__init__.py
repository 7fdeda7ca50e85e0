"""The loop that learns from served traffic: labels on recorded predictions, the review queue, live quality, drift
without labels (routes, quality, drift), and the labelled dataset export (export). Retraining the stack on it is
learning.restack.
"""
from shared.feedback.routes import NoReference, drift_now, init_app, quality_now, serving_classes, serving_weights

__all__ = ["NoReference", "drift_now", "init_app", "quality_now", "serving_classes", "serving_weights"]
