from django.conf import settings
from django.core.management.base import BaseCommand

from gallery.services import purge_unsaved


class Command(BaseCommand):
    help = "Delete unsaved private images older than the retention period (LDM_UNSAVED_RETENTION_DAYS), files included."

    def add_arguments(self, parser):
        parser.add_argument("--days", type=int, default=None, help="override the retention period")

    def handle(self, *args, days, **options):
        days = settings.LDM_UNSAVED_RETENTION_DAYS if days is None else days
        count = purge_unsaved(days)
        self.stdout.write(f"Deleted {count} unsaved image{'s' if count != 1 else ''} older than {days} days.")
