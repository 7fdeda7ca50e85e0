"""WSGI entry of the ocr_nb service: the member table's factory for it."""
from shared.members import service

app = service("ocr_nb").create_app()
