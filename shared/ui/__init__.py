"""The try-it page and the history page, served by the gateway (pages.py, with templates/ and static/ beside it)."""
from shared.ui.pages import init_app

__all__ = ["init_app"]
