"""Prediction history: the SQLite store and its HTTP routes."""
