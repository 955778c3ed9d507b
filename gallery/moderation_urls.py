"""Staff moderation pages (review queue, actions, audit log, blocklist)."""

app_name = "moderation"

urlpatterns: list = []
