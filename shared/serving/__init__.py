"""Serving: the runtime base, the app factory, batching, the HTTP contract, observability."""
