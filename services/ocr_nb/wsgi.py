"""WSGI entry of the ocr_nb member: the shared service factory, told which learner to serve."""
from shared.serving.app import create_app

app = create_app({"SERVICE_NAME": "ocr_nb"})
