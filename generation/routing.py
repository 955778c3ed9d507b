"""Websocket URL routes of the generation app (consumers arrive with live jobs)."""

websocket_urlpatterns: list = []
