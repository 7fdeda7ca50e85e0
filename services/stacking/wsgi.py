"""WSGI entry of the stacking gateway (:5003): the shared gateway factory, in a process without torch."""
from shared.gateway.app import create_app, keep_torch_out

keep_torch_out()
app = create_app()
