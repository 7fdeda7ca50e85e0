"""WSGI entry of the clip_svm member: the shared service factory, told which learner to serve."""
from shared.serving.app import create_app

app = create_app({"SERVICE_NAME": "clip_svm"})
