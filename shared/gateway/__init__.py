"""The stacking gateway: app factory, member client, batching slack, meta-model runtime, routes. Never imports torch."""
