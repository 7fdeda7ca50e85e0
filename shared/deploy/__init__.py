"""Deploy files generated from the member table: `python -m shared deploy render` (see render.py)."""
from shared.deploy.render import COMMAND, differences, render, write

__all__ = ["COMMAND", "differences", "render", "write"]
