"""WSGI entry of the clip_logreg service: the member table's factory for it."""
from shared.members import service

app = service("clip_logreg").create_app()
