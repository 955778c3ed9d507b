"""``manage.py generate``: PNGs with embedded parameters, from the command line."""

from io import StringIO

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from PIL import Image

from generation.diffusion import read_png_parameters
from tests.generation.diffusion.tiny import build_tiny_pipeline

# The command checks prompts against the moderation blocklist, which lives in the database.
pytestmark = [pytest.mark.usefixtures("single_thread"), pytest.mark.django_db]


@pytest.fixture(scope="module")
def single_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny_pipeline(tmp_path_factory.mktemp("cli-model"))


def run(*args, **options):
    out, err = StringIO(), StringIO()
    call_command("generate", *args, stdout=out, stderr=err, **options)
    return out.getvalue(), err.getvalue()


def test_generate_writes_pngs_with_embedded_parameters(model_dir, tmp_path):
    stdout, stderr = run("a red circle", model=str(model_dir), width=32, height=32, steps=2, seed=5,
                         num_images=2, sampler="Euler a", out=str(tmp_path), precision="fp32")
    written = sorted(tmp_path.glob("*.png"))
    assert [p.name for p in written] == ["00000-5.png", "00001-6.png"]
    assert str(written[0]) in stdout and "CLIP score" in stdout
    assert "step 2/2" in stderr
    fields = read_png_parameters(written[1])
    assert fields["prompt"] == "a red circle" and fields["seed"] == 6 and fields["sampler"] == "Euler a"
    with Image.open(written[1]) as image:
        assert image.size == (32, 32)
        assert "Steps: 2, Sampler: Euler a" in image.text["parameters"]


def test_generate_from_png_reproduces_the_image(model_dir, tmp_path):
    run("a blue square", model=str(model_dir), width=32, height=32, steps=2, seed=9, out=str(tmp_path / "a"))
    first = next((tmp_path / "a").glob("*.png"))
    run(model=str(model_dir), from_png=str(first), out=str(tmp_path / "b"))
    again = next((tmp_path / "b").glob("*.png"))
    assert again.name == "00000-9.png"
    assert np.array_equal(np.asarray(Image.open(first)), np.asarray(Image.open(again)))


def test_invalid_options_are_reported_by_field(model_dir, tmp_path):
    with pytest.raises(CommandError) as caught:
        run("a red circle", model=str(model_dir), width=33, steps=0, out=str(tmp_path))
    message = str(caught.value)
    assert "width: must be a multiple of 8" in message and "steps:" in message
    assert not list(tmp_path.glob("*.png"))


def test_an_unloadable_model_is_a_clear_command_error(tmp_path, monkeypatch):
    import diffusers

    def offline(*args, **kwargs):
        raise OSError("[Errno 101] Network is unreachable")

    monkeypatch.setattr(diffusers.DiffusionPipeline, "download", offline)
    with pytest.raises(CommandError, match="no-such-org/no-such-model"):
        run("x", model="no-such-org/no-such-model", out=str(tmp_path))


def test_a_registered_model_is_used_by_its_slug_with_its_limits(model_dir, tmp_path):
    from generation.models import DiffusionModel

    DiffusionModel.objects.create(name="Tiny", slug="tiny-cli", source=str(model_dir), has_clip=True,
                                  default_width=32, default_height=32, max_width=64, max_height=64,
                                  default_steps=2, default_sampler="DDIM")
    run("a green square", model="tiny-cli", seed=1, out=str(tmp_path))
    fields = read_png_parameters(next(tmp_path.glob("*.png")))
    assert (fields["width"], fields["steps"], fields["sampler"]) == (32, 2, "DDIM")
    with pytest.raises(CommandError, match="width"):
        run("a green square", model="tiny-cli", width=128, out=str(tmp_path))


def test_img2img_from_the_command_line_repaints_a_picture_and_its_png_reproduces_it(model_dir, tmp_path):
    run("a blue square", model=str(model_dir), width=32, height=32, steps=2, seed=9, out=str(tmp_path / "a"),
        precision="fp32")
    source = next((tmp_path / "a").glob("*.png"))
    run("a red square", model=str(model_dir), init_image=str(source), denoising_strength=0.5, steps=4, seed=3,
        out=str(tmp_path / "b"), precision="fp32")
    made = next((tmp_path / "b").glob("*.png"))
    fields = read_png_parameters(made)
    assert fields["mode"] == "img2img" and fields["denoising_strength"] == 0.5
    assert not np.array_equal(np.asarray(Image.open(made)), np.asarray(Image.open(source)))
    # Given the same source again, the PNG's parameters make the same image.
    run(model=str(model_dir), from_png=str(made), init_image=str(source), out=str(tmp_path / "c"), precision="fp32")
    assert np.array_equal(np.asarray(Image.open(made)), np.asarray(Image.open(next((tmp_path / "c").glob("*.png")))))
    # Without the source, the same parameters are refused by name.
    with pytest.raises(CommandError, match="init_image: mode img2img needs a source image"):
        run(model=str(model_dir), from_png=str(made), out=str(tmp_path / "d"))


def test_a_mask_without_a_picture_or_a_file_that_is_no_image_is_a_clear_command_error(model_dir, tmp_path):
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("hello")
    with pytest.raises(CommandError, match="--mask needs --init-image"):
        run("a red circle", model=str(model_dir), mask=str(not_an_image), out=str(tmp_path))
    with pytest.raises(CommandError, match="--init-image: .*notes.png is not an image we can read"):
        run("a red circle", model=str(model_dir), init_image=str(not_an_image), out=str(tmp_path))


def test_a_lora_file_from_the_command_line_changes_the_image_and_is_recorded_in_the_png(model_dir, tmp_path):
    from generation.diffusion.lora import model_skeleton, save_lora
    from tests.generation.diffusion.tiny import build_tiny_lora_layers, tiny_lora_state_dict

    lora = save_lora(tiny_lora_state_dict(build_tiny_lora_layers(model_skeleton(model_dir), seed=1), "kohya"),
                     tmp_path / "shiny.safetensors")
    base = dict(model=str(model_dir), width=32, height=32, steps=2, seed=4, precision="fp32")
    run("a red circle", out=str(tmp_path / "plain"), **base)
    run("a red circle", out=str(tmp_path / "lora"), lora=[f"{lora}:0.8"], **base)
    plain, styled = (next((tmp_path / name).glob("*.png")) for name in ("plain", "lora"))
    assert not np.array_equal(np.asarray(Image.open(plain)), np.asarray(Image.open(styled)))
    assert read_png_parameters(styled)["loras"] == [["shiny", 0.8]]
    with pytest.raises(CommandError, match="--lora: .* is not a file"):
        run("a red circle", out=str(tmp_path / "x"), lora=["missing.safetensors"], **base)
