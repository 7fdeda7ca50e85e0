"""The stacking gateway: member client, batching slack, the meta-model runtime, routes. Never imports torch."""
