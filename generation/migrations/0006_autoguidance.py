"""Autoguidance: models say whether they have a guide UNet and at what scale to use it by default.

The built-in model ships a guide UNet since 2026-11-27 and is sampled with autoguidance 1.0 at
classifier-free guidance 1.5. Only the guidance scale ldmsite itself shipped before (2.0) is
replaced; a scale an admin chose is left alone. Values are frozen here on purpose: a migration must
not change meaning when the code's constants move on.
"""

from django.db import migrations, models

SLUG = "ldm-shapes"
GUIDANCE_SHIPPED_BEFORE = 2.0
GUIDANCE_NOW = 1.5
AUTOGUIDANCE_NOW = 1.0


def forward(apps, schema_editor):
    DiffusionModel = apps.get_model("generation", "DiffusionModel")
    builtin = DiffusionModel.objects.filter(slug=SLUG)
    builtin.update(has_guide_unet=True)
    builtin.filter(default_guidance_scale=GUIDANCE_SHIPPED_BEFORE).update(
        default_guidance_scale=GUIDANCE_NOW, default_autoguidance_scale=AUTOGUIDANCE_NOW)


class Migration(migrations.Migration):

    dependencies = [
        ("generation", "0005_builtin_model_euler_karras"),
    ]

    operations = [
        migrations.AddField(
            model_name="diffusionmodel",
            name="default_autoguidance_scale",
            field=models.FloatField(default=0.0, help_text="0: autoguidance off unless a request asks"),
        ),
        migrations.AddField(
            model_name="diffusionmodel",
            name="has_guide_unet",
            field=models.BooleanField(
                default=False,
                help_text="The model directory has a guide_unet/ folder, so autoguidance is available"),
        ),
        migrations.RunPython(forward, migrations.RunPython.noop),
    ]
