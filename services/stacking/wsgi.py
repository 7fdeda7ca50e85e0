"""WSGI entry of the stacking gateway (:5003): the shared service factory, in a process without torch."""
from shared.gateway.torch_guard import keep_torch_out

keep_torch_out()  # first: anything imported after it (sklearn via skops) must not pull torch in

from shared.serving.app import create_app  # noqa: E402 - after the guard, on purpose

app = create_app({"SERVICE_NAME": "stacking"})
