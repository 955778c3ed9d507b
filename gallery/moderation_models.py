"""Moderation records: audit log, blocklist, flagged attempts (see gallery/moderation.py)."""
