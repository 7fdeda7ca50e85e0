"""The try-it page and the history page, served by the gateway."""
