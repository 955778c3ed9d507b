from django.core.management.base import BaseCommand, CommandError

from generation.services import probe_workers


class Command(BaseCommand):
    help = "Send a probe through the job queue and report which worker answered it."

    def add_arguments(self, parser):
        parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait (default 10)")

    def handle(self, *args, timeout, **options):
        probe = probe_workers(timeout=timeout)
        if probe.answered_at is None:
            raise CommandError(
                f"No worker answered within {timeout:g} s. In scale-out mode start one with "
                "`python manage.py rundramatiq`; in embedded mode workers run inside the server."
            )
        seconds = (probe.answered_at - probe.created_at).total_seconds()
        self.stdout.write(f"answered by {probe.answered_by} in {seconds:.3f} s")
