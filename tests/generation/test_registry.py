"""The built-in model on the database: registered on a fresh one, its defaults kept up to date."""

import importlib

import pytest
from django.apps import apps

from generation.diffusion.training.presets import BUILTIN_AUTOGUIDANCE_SCALE, BUILTIN_GUIDANCE_SCALE, BUILTIN_SAMPLER
from generation.models import DiffusionModel
from generation.registry import BUILTIN_SLUG, register_builtin_model

guidance_migration_3 = importlib.import_module("generation.migrations.0003_builtin_model_guidance_3")
guidance_migration = importlib.import_module("generation.migrations.0004_builtin_model_guidance_2")
sampler_migration = importlib.import_module("generation.migrations.0005_builtin_model_euler_karras")
autoguidance_migration = importlib.import_module("generation.migrations.0006_autoguidance")


@pytest.mark.django_db
def test_a_fresh_database_offers_the_built_in_model_by_default_at_its_guidance_scale():
    DiffusionModel.objects.all().delete()
    model = register_builtin_model()
    assert model.slug == BUILTIN_SLUG and model.is_default
    assert model.default_guidance_scale == BUILTIN_GUIDANCE_SCALE == autoguidance_migration.GUIDANCE_NOW
    assert model.default_autoguidance_scale == BUILTIN_AUTOGUIDANCE_SCALE == autoguidance_migration.AUTOGUIDANCE_NOW
    assert model.has_guide_unet
    assert model.default_sampler == BUILTIN_SAMPLER == sampler_migration.NOW


@pytest.mark.django_db
@pytest.mark.parametrize("before, after", [(5.0, 2.0), (7.0, 2.0), (3.0, 2.0), (6.5, 6.5), (2.5, 2.5)])
def test_an_older_install_moves_to_the_new_guidance_scale_unless_an_admin_chose_one(before, after):
    DiffusionModel.objects.filter(slug=BUILTIN_SLUG).update(default_guidance_scale=before)
    guidance_migration.forward(apps, None)
    assert DiffusionModel.objects.get(slug=BUILTIN_SLUG).default_guidance_scale == after


@pytest.mark.django_db
def test_an_install_that_missed_every_guidance_migration_ends_at_the_newest_scales():
    DiffusionModel.objects.filter(slug=BUILTIN_SLUG).update(default_guidance_scale=7.0, default_autoguidance_scale=0,
                                                            has_guide_unet=False)
    guidance_migration_3.forward(apps, None)
    guidance_migration.forward(apps, None)
    autoguidance_migration.forward(apps, None)
    model = DiffusionModel.objects.get(slug=BUILTIN_SLUG)
    assert model.default_guidance_scale == BUILTIN_GUIDANCE_SCALE
    assert model.default_autoguidance_scale == BUILTIN_AUTOGUIDANCE_SCALE and model.has_guide_unet


@pytest.mark.django_db
@pytest.mark.parametrize("before, guidance, autoguidance", [(2.0, 1.5, 1.0), (6.5, 6.5, 0.0), (2.5, 2.5, 0.0)])
def test_an_older_install_moves_to_autoguidance_unless_an_admin_chose_a_guidance_scale(before, guidance, autoguidance):
    DiffusionModel.objects.filter(slug=BUILTIN_SLUG).update(default_guidance_scale=before, default_autoguidance_scale=0,
                                                            has_guide_unet=False)
    autoguidance_migration.forward(apps, None)
    model = DiffusionModel.objects.get(slug=BUILTIN_SLUG)
    assert (model.default_guidance_scale, model.default_autoguidance_scale) == (guidance, autoguidance)
    assert model.has_guide_unet  # the shipped model has its guide UNet either way; the scale decides the default


@pytest.mark.django_db
@pytest.mark.parametrize("before, after", [("DDIM", "Euler Karras"), ("DPM++ 2M Karras", "DPM++ 2M Karras"),
                                           ("Euler a", "Euler a")])
def test_an_older_install_moves_from_ddim_to_the_new_default_sampler_unless_an_admin_chose_one(before, after):
    DiffusionModel.objects.filter(slug=BUILTIN_SLUG).update(default_sampler=before)
    sampler_migration.forward(apps, None)
    assert DiffusionModel.objects.get(slug=BUILTIN_SLUG).default_sampler == after
