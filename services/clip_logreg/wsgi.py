"""WSGI entry of the clip_logreg member: the shared member factory, told which learner to serve."""
from shared.serving.member import create_app

app = create_app({"SERVICE_NAME": "clip_logreg"})
