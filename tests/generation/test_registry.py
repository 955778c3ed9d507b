"""The model registry: the built-in model registered on a fresh database with its own defaults, older
installs moved to them, and added models registered with the defaults their directories state."""

import importlib
import io
import json
import shutil
import subprocess
import sys

import pytest
from django.apps import apps
from django.conf import settings
from django.core.management import call_command

from generation.diffusion import (ModelLoadError, directory_content_hash, load_pipeline, read_model_defaults,
                                  validate_request)
from generation.models import DiffusionModel
from generation.registry import BUILTIN_SLUG, add_model, register_builtin_model

guidance_migration_3 = importlib.import_module("generation.migrations.0003_builtin_model_guidance_3")
guidance_migration = importlib.import_module("generation.migrations.0004_builtin_model_guidance_2")
sampler_migration = importlib.import_module("generation.migrations.0005_builtin_model_euler_karras")
autoguidance_migration = importlib.import_module("generation.migrations.0006_autoguidance")

# The built-in model's own defaults (generation/builtin_model/ldmsite_defaults.json).
BUILTIN = read_model_defaults(settings.LDM_BUILTIN_MODEL_DIR)
BUILTIN_GUIDANCE_SCALE = BUILTIN["default_guidance_scale"]
BUILTIN_AUTOGUIDANCE_SCALE = BUILTIN["default_autoguidance_scale"]
BUILTIN_SAMPLER = BUILTIN["default_sampler"]


@pytest.mark.django_db
def test_a_fresh_database_offers_the_built_in_model_by_default_at_its_guidance_scale():
    DiffusionModel.objects.all().delete()
    model = register_builtin_model()
    assert model.slug == BUILTIN_SLUG and model.is_default
    assert model.default_guidance_scale == BUILTIN_GUIDANCE_SCALE == autoguidance_migration.GUIDANCE_NOW
    assert model.default_autoguidance_scale == BUILTIN_AUTOGUIDANCE_SCALE == autoguidance_migration.AUTOGUIDANCE_NOW
    assert model.has_guide_unet
    assert model.default_sampler == BUILTIN_SAMPLER == sampler_migration.NOW
    assert {key: getattr(model, key) for key in BUILTIN} == BUILTIN  # every default its directory states


@pytest.fixture(scope="module")
def builtin_loaded():
    return load_pipeline(str(settings.LDM_BUILTIN_MODEL_DIR), device="cpu", dtype="fp32")


@pytest.mark.django_db
def test_the_engine_the_cli_and_the_site_give_the_built_in_model_the_same_defaults(builtin_loaded):
    """The engine and `manage.py generate --model generation/builtin_model` use the loaded model's
    limits, the site and `manage.py generate` without --model the registry's: the same, from the
    model directory's ldmsite_defaults.json."""
    DiffusionModel.objects.all().delete()
    registered = register_builtin_model()
    assert registered.limits() == builtin_loaded.limits
    for limits in (registered.limits(), builtin_loaded.limits):
        request = validate_request({"prompt": "a large red circle in the center on a white background", "seed": 4},
                                   limits)
        assert (request.sampler, request.guidance_scale, request.autoguidance_scale) == ("Euler Karras", 1.5, 1.0)
        assert (request.steps, request.width, request.height) == (25, 64, 64)


@pytest.mark.django_db
def test_the_built_in_model_is_registered_with_the_hash_the_engine_writes_into_its_pngs(builtin_loaded):
    """One model identity: the registry's revision is the loaded model's content hash, whose first
    10 hex digits are the PNG's "Model hash" (and the A1111 API's hash)."""
    DiffusionModel.objects.all().delete()
    registered = register_builtin_model()
    assert registered.revision == builtin_loaded.content_hash and len(registered.revision) == 64
    assert builtin_loaded.short_hash == registered.revision[:10]


@pytest.mark.django_db
def test_an_existing_built_in_row_without_a_hash_gets_it_at_the_next_migrate():
    DiffusionModel.objects.filter(slug=BUILTIN_SLUG).update(revision="", default_guidance_scale=4.0)
    register_builtin_model()
    model = DiffusionModel.objects.get(slug=BUILTIN_SLUG)
    assert model.revision == directory_content_hash(settings.LDM_BUILTIN_MODEL_DIR)
    assert model.default_guidance_scale == 4.0, "only the hash is filled in"


@pytest.mark.django_db
def test_a_model_staff_add_in_the_admin_gets_its_hash_when_saved_and_not_on_a_request(admin_client):
    form = {"name": "Hand made", "slug": "hand-made", "source": str(settings.LDM_BUILTIN_MODEL_DIR),
            "family": "sd1", "default_width": 64, "default_height": 64, "max_width": 256, "max_height": 256,
            "default_steps": 25, "max_steps": 150, "default_sampler": "Euler", "default_guidance_scale": 1.5,
            "default_autoguidance_scale": 0, "queue_name": "default", "enabled": "on"}
    response = admin_client.post("/admin/generation/diffusionmodel/add/", form)
    assert response.status_code == 302, response.content.decode()[:3000]
    assert DiffusionModel.objects.get(slug="hand-made").revision == directory_content_hash(
        settings.LDM_BUILTIN_MODEL_DIR)


def test_the_content_hash_is_computed_without_loading_torch():
    code = ("import sys; from generation.diffusion import directory_content_hash; "
            f"print(directory_content_hash({str(settings.LDM_BUILTIN_MODEL_DIR)!r})); print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=str(settings.BASE_DIR))
    assert result.returncode == 0, result.stderr
    digest, torch_loaded = result.stdout.split()
    assert digest == directory_content_hash(settings.LDM_BUILTIN_MODEL_DIR) and torch_loaded == "False"


@pytest.mark.django_db
def test_a_default_staff_chose_for_the_built_in_model_survives_the_next_migrate():
    DiffusionModel.objects.filter(slug=BUILTIN_SLUG).update(default_sampler="DDIM", default_guidance_scale=4.0)
    register_builtin_model()
    model = DiffusionModel.objects.get(slug=BUILTIN_SLUG)
    assert (model.default_sampler, model.default_guidance_scale) == ("DDIM", 4.0)


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


@pytest.fixture
def tiny_with_defaults(tiny_pipeline_dir, tmp_path):
    path = shutil.copytree(tiny_pipeline_dir, tmp_path / "tiny-with-defaults")
    (path / "ldmsite_defaults.json").write_text(json.dumps({
        "default_sampler": "euler karras", "default_guidance_scale": 3.5, "default_steps": 12, "max_width": 96,
    }))
    return path


@pytest.mark.django_db
def test_an_added_model_is_registered_with_the_defaults_its_directory_states(tiny_with_defaults):
    loaded = load_pipeline(str(tiny_with_defaults), dtype="fp32")
    model = add_model(str(tiny_with_defaults), name="Tiny with defaults", loader=lambda *a, **k: loaded)
    assert (model.default_sampler, model.default_guidance_scale, model.default_steps, model.max_width) == \
        ("Euler Karras", 3.5, 12, 96)
    # What the file leaves out follows from the weights: the tiny UNet's native 32x32.
    assert (model.default_width, model.default_height, model.max_height) == (32, 32, 1024)
    assert model.limits() == loaded.limits
    request = validate_request({"prompt": "a red circle", "seed": 1}, model.limits())
    assert (request.sampler, request.guidance_scale, request.steps, request.width) == ("Euler Karras", 3.5, 12, 32)


@pytest.mark.django_db
def test_add_model_refuses_a_model_whose_defaults_file_is_malformed_and_names_the_key(tiny_with_defaults):
    (tiny_with_defaults / "ldmsite_defaults.json").write_text(json.dumps({"default_guidance_scale": "high"}))
    with pytest.raises(ModelLoadError, match=r"ldmsite_defaults\.json: key 'default_guidance_scale'"):
        add_model(str(tiny_with_defaults), slug="bad-defaults")
    assert not DiffusionModel.objects.filter(slug="bad-defaults").exists()


@pytest.mark.django_db
def test_the_add_model_command_reports_the_defaults_it_registered(tiny_with_defaults):
    output = io.StringIO()
    call_command("add_model", str(tiny_with_defaults), "--slug", "tiny-defaults", stdout=output)
    out = output.getvalue()
    assert "Defaults: Euler Karras, guidance 3.5, 12 steps, 32x32." in out
    assert DiffusionModel.objects.get(slug="tiny-defaults").default_guidance_scale == 3.5
