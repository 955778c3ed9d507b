"""The built-in model's default sampler follows the shipped model (Euler Karras since 2026-11-27).

Only the sampler ldmsite itself shipped before (DDIM) is replaced; a sampler an admin chose is left
alone. Values are frozen here on purpose: a migration must not change meaning when the code's
constant moves on.
"""

from django.db import migrations

SLUG = "ldm-shapes"
SHIPPED_BEFORE = "DDIM"
NOW = "Euler Karras"


def forward(apps, schema_editor):
    DiffusionModel = apps.get_model("generation", "DiffusionModel")
    DiffusionModel.objects.filter(slug=SLUG, default_sampler=SHIPPED_BEFORE).update(default_sampler=NOW)


class Migration(migrations.Migration):

    dependencies = [
        ("generation", "0004_builtin_model_guidance_2"),
    ]

    operations = [migrations.RunPython(forward, migrations.RunPython.noop)]
