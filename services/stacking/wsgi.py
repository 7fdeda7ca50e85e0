"""WSGI entry of the stacking service: the member table's factory for it."""
from shared.members import service

app = service("stacking").create_app()
