"""Serving: the runtime base, the members' app factory and every service's base, batching, HTTP, observability."""
