"""The built-in model's default guidance scale follows the shipped model (3.0 since 2026-11-26).

Only a value ldmsite itself shipped (7.0 for v0, 5.0 for v1-v1.2) is replaced; a scale an
admin chose is left alone. Values are frozen here on purpose: a migration must not change
meaning when the code's constant moves on.
"""

from django.db import migrations

SLUG = "ldm-shapes"
SHIPPED_BEFORE = (7.0, 5.0)
NOW = 3.0


def forward(apps, schema_editor):
    DiffusionModel = apps.get_model("generation", "DiffusionModel")
    DiffusionModel.objects.filter(slug=SLUG, default_guidance_scale__in=SHIPPED_BEFORE).update(default_guidance_scale=NOW)


class Migration(migrations.Migration):

    dependencies = [
        ("generation", "0002_workerstatus_diffusionmodel_queue_name"),
    ]

    operations = [migrations.RunPython(forward, migrations.RunPython.noop)]
