"""WSGI entry of the clip_svm service: the member table's factory for it."""
from shared.members import service

app = service("clip_svm").create_app()
