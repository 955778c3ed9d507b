"""The built-in model's default guidance scale follows the shipped model (2.0 since v1.6, 2026-11-26).

Only a value ldmsite itself shipped (7.0 for v0, 5.0 for v1-v1.2, 3.0 for v1.2-v1.5) is replaced;
a scale an admin chose is left alone. Values are frozen here on purpose: a migration must not
change meaning when the code's constant moves on.
"""

from django.db import migrations

SLUG = "ldm-shapes"
SHIPPED_BEFORE = (7.0, 5.0, 3.0)
NOW = 2.0


def forward(apps, schema_editor):
    DiffusionModel = apps.get_model("generation", "DiffusionModel")
    DiffusionModel.objects.filter(slug=SLUG, default_guidance_scale__in=SHIPPED_BEFORE).update(default_guidance_scale=NOW)


class Migration(migrations.Migration):

    dependencies = [
        ("generation", "0003_builtin_model_guidance_3"),
    ]

    operations = [migrations.RunPython(forward, migrations.RunPython.noop)]
