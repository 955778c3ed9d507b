"""The engine on a tiny seeded model: reproducibility, samplers, previews, cancellation, metadata."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from generation.diffusion import SAMPLERS, GenerationCancelled, generate, validate_request
from generation.diffusion.samplers import CLIP_GUIDANCE_TESTED_SAMPLERS

from .tiny import TINY_IMAGE_SIZE, with_engine_kernels


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def pixels(image):
    return np.asarray(image, dtype=np.int16)


def plain_pipeline(model_dir, scheduler_class):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(model_dir, safety_checker=None, requires_safety_checker=False)
    pipe.scheduler = scheduler_class.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return with_engine_kernels(pipe)


@pytest.mark.parametrize("sampler, with_progress", [
    ("Euler", False),
    ("DPM++ 2M Karras", True),
    ("Euler a", True),
    ("DDIM", True),
])
def test_same_seed_gives_same_pixels_as_plain_diffusers(tiny_model_dir, engine_model, make_request, sampler,
                                                        with_progress):
    """With CLIP guidance off, the engine is exactly ``StableDiffusionPipeline.__call__`` with the
    scheduler the metadata records, per-image generators seeded seed + k, and the same parameters."""
    import diffusers

    request = make_request(sampler=sampler, seed=1234, num_images=2, negative_prompt="blurry", eta=0.5)
    result = generate(engine_model, request, on_progress=(lambda progress: None) if with_progress else None)

    recorded = result.metadata[0]["scheduler"]
    assert recorded["class"] == SAMPLERS[sampler].scheduler_class
    pipe = plain_pipeline(tiny_model_dir, diffusers.DDIMScheduler)
    pipe.scheduler = getattr(diffusers, recorded["class"]).from_config(recorded["config"])
    expected = pipe(request.prompt, negative_prompt=request.negative_prompt, height=request.height,
                    width=request.width, num_inference_steps=request.steps, guidance_scale=request.guidance_scale,
                    num_images_per_prompt=2, eta=0.5,
                    generator=[torch.Generator("cpu").manual_seed(s) for s in (1234, 1235)]).images

    assert result.seeds == [1234, 1235]
    for ours, theirs in zip(result.images, expected):
        assert np.array_equal(pixels(ours), pixels(theirs))


def test_image_k_of_a_job_is_the_image_of_seed_plus_k(engine_model, make_request):
    batch = generate(engine_model, make_request(seed=50, num_images=3))
    single = generate(engine_model, make_request(seed=52, num_images=1))
    assert batch.seeds == [50, 51, 52]
    assert [m["seed"] for m in batch.metadata] == [50, 51, 52]
    assert {m["job_seed"] for m in batch.metadata} == {50}
    # Same noise; only the batched matmuls may round differently.
    assert np.abs(pixels(batch.images[2]) - pixels(single.images[0])).max() <= 2
    assert not np.array_equal(pixels(batch.images[0]), pixels(batch.images[1]))


def test_the_same_request_twice_gives_identical_pixels(engine_model, make_request):
    first = generate(engine_model, make_request(sampler="DPM++ 2M SDE", seed=9))
    second = generate(engine_model, make_request(sampler="DPM++ 2M SDE", seed=9))
    assert np.array_equal(pixels(first.images[0]), pixels(second.images[0]))


def test_a_sampler_name_decides_karras_spacing_whatever_the_models_config_says(tiny_model_dir):
    """A model whose config turns Karras sigmas on (the built-in model's does) still gets plain
    spacing for "UniPC" or "DPM++ 2M", as in A1111, and Karras spacing for the Karras names."""
    import json

    from generation.diffusion import build_scheduler

    config = json.loads((tiny_model_dir / "scheduler" / "scheduler_config.json").read_text())
    for karras_in_config in (True, False):
        config["use_karras_sigmas"] = karras_in_config
        for name in ("Euler", "UniPC", "DPM++ 2M", "Heun", "DEIS"):
            assert build_scheduler(name, config).config.use_karras_sigmas is False, name
        for name in ("Euler Karras", "DPM++ 2M Karras", "LMS Karras"):
            assert build_scheduler(name, config).config.use_karras_sigmas is True, name


@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_each_sampler_name_runs(engine_model, make_request, sampler):
    result = generate(engine_model, make_request(sampler=sampler, steps=3, eta=0.5))
    image = result.images[0]
    assert image.size == (TINY_IMAGE_SIZE, TINY_IMAGE_SIZE)
    assert result.metadata[0]["scheduler"]["class"] == SAMPLERS[sampler].scheduler_class
    assert np.isfinite(pixels(image)).all() and pixels(image).std() > 0


def test_previews_have_the_right_size_and_change_between_steps(engine_model, make_request):
    progress = []
    generate(engine_model, make_request(steps=5), on_progress=progress.append)
    assert [p.step for p in progress] == [1, 2, 3, 4, 5]
    assert all(p.total == 5 for p in progress)
    latent_side = TINY_IMAGE_SIZE // engine_model.pipeline.vae_scale_factor
    assert all(p.preview.size == (latent_side, latent_side) for p in progress)
    frames = [pixels(p.preview) for p in progress]
    assert all(not np.array_equal(a, b) for a, b in zip(frames, frames[1:]))
    assert progress[-1].eta_seconds == 0
    assert all(p.elapsed > 0 and p.eta_seconds >= 0 for p in progress)
    assert [p.elapsed for p in progress] == sorted(p.elapsed for p in progress)


def test_a_batch_preview_is_a_grid_and_preview_size_bounds_its_longer_side(engine_model, make_request):
    progress = []
    generate(engine_model, make_request(steps=2, num_images=3), on_progress=progress.append, preview_size=64)
    latent_side = TINY_IMAGE_SIZE // engine_model.pipeline.vae_scale_factor
    assert progress[0].preview.size == (64, 64)  # 2 x 2 grid of 16x16 latents, scaled to 64
    assert latent_side == 16


class _Config(dict):
    __getattr__ = dict.__getitem__


class LinearVae:
    """A stand-in VAE whose decoder is exactly linear per latent pixel, so the fit is checkable."""

    def __init__(self):
        generator = torch.Generator().manual_seed(5)
        self.to_latent = torch.randn(4, 3, generator=generator)
        self.to_rgb = torch.randn(3, 4, generator=generator) * 0.1  # stays inside [-1, 1]
        self.rgb_bias = torch.tensor([0.1, -0.2, 0.05])
        self.config = _Config(block_out_channels=[8, 8], scaling_factor=0.5)

    def parameters(self):
        return iter([torch.zeros(1)])

    def encode(self, images):
        pooled = torch.nn.functional.avg_pool2d(images, 2)
        mean = torch.einsum("lc,bchw->blhw", self.to_latent, pooled)
        mean[:, 3] = torch.tanh(3 * mean[:, 3])  # keep the four latent channels independent
        return SimpleNamespace(latent_dist=SimpleNamespace(mean=mean))

    def decode(self, latents):
        rgb = torch.einsum("cl,blhw->bchw", self.to_rgb, latents) + self.rgb_bias.view(1, 3, 1, 1)
        return SimpleNamespace(sample=torch.nn.functional.interpolate(rgb, scale_factor=2, mode="nearest"))


def test_an_unknown_vae_gets_preview_factors_fitted_by_least_squares_against_its_decoder():
    from generation.diffusion import fit_latent_preview

    vae = LinearVae()
    fitted = fit_latent_preview(vae, count=6, size=32)
    # rgb = to_rgb @ z + b, and the projection sees z * scaling_factor.
    assert torch.allclose(fitted.matrix, vae.to_rgb.T / 0.5, atol=1e-3)
    assert torch.allclose(fitted.bias, vae.rgb_bias, atol=1e-3)


def test_previews_use_published_factors_for_sd_families_and_fit_the_tiny_model_once(engine_model):
    from generation.diffusion.preview import known_latent_preview

    sd_vae = {"latent_channels": 4, "block_out_channels": [128, 256, 512, 512], "scaling_factor": 0.18215}
    assert known_latent_preview("sd1", sd_vae).source == "sd1"
    assert known_latent_preview("sdxl", {**sd_vae, "scaling_factor": 0.13025}).source == "sdxl"
    assert known_latent_preview("custom", sd_vae) is None
    preview = engine_model.latent_preview()
    assert preview.source == "fitted" and preview.matrix.shape == (4, 3)
    assert engine_model.latent_preview() is preview


def test_cancel_stops_within_one_step_and_keeps_the_image_it_has(engine_model, make_request):
    unet_calls, decodes = [], []
    pipeline = engine_model.pipeline
    hook = pipeline.unet.register_forward_hook(lambda *args: unet_calls.append(1))
    original_decode = pipeline.vae.decode
    cancel = {"flag": False}
    engine_model.latent_preview()  # fitted (with VAE decodes) once per model: not this job's decode

    def on_progress(progress):
        if progress.step == 2:
            cancel["flag"] = True  # e.g. the owner pressed cancel during step 3

    try:
        pipeline.vae.decode = lambda *a, **k: decodes.append(1) or original_decode(*a, **k)
        with pytest.raises(GenerationCancelled) as caught:
            generate(engine_model, make_request(steps=20, num_images=2), on_progress=on_progress,
                     should_cancel=lambda: cancel["flag"])
    finally:
        hook.remove()
        del pipeline.vae.decode
    assert caught.value.step == 3 and caught.value.total == 20
    assert len(unet_calls) == 3, "no step after the cancel"
    assert decodes == [1], "one VAE decode: the images the run had (A1111 returns them on interrupt)"
    assert not isinstance(caught.value, (ValueError, RuntimeError))
    result = caught.value.result
    assert [image.size for image in result.images] == [(TINY_IMAGE_SIZE, TINY_IMAGE_SIZE)] * 2
    assert result.seeds == [7, 8]
    for meta in result.metadata:
        assert (meta["interrupted"], meta["interrupted_at_step"], meta["total_steps"]) == (True, 3, 20)
        assert meta["steps"] == 20, "the request as asked"


def test_an_interrupted_image_is_the_x0_estimate_so_at_the_last_step_it_is_the_finished_image(
        engine_model, make_request):
    """Interrupted at step k, the run decodes its estimate of the clean image at step k (what the
    preview shows), not the noisy latents; at the last step of Euler that estimate is where the
    sampler lands, so the kept image is the finished one. Without a progress callback too."""
    request = make_request(steps=6, sampler="Euler")
    finished = generate(engine_model, request).images[0]
    reached = {"step": 0}

    def cancel_at(step):
        reached["step"] = 0

        def should_cancel():
            reached["step"] += 1
            return reached["step"] > step  # the first call is the check before the run
        return should_cancel

    with pytest.raises(GenerationCancelled) as last:
        generate(engine_model, request, should_cancel=cancel_at(6))
    assert last.value.step == 6 and last.value.result.metadata[0]["interrupted_at_step"] == 6
    assert np.abs(pixels(last.value.result.images[0]) - pixels(finished)).max() <= 1
    with pytest.raises(GenerationCancelled) as early:
        generate(engine_model, request, should_cancel=cancel_at(2))
    partial = pixels(early.value.result.images[0])
    assert early.value.step == 2 and np.abs(partial - pixels(finished)).mean() > 1, "an earlier estimate"
    assert partial.std() < 60, "a smooth estimate, not decoded noise"


def test_a_job_cancelled_before_it_starts_runs_nothing(engine_model, make_request):
    with pytest.raises(GenerationCancelled) as caught:
        generate(engine_model, make_request(), should_cancel=lambda: True)
    assert caught.value.step == 0
    assert caught.value.result is None, "no step, no image"


def test_metadata_records_everything_needed_to_reproduce_the_image(engine_model, make_request):
    request = make_request(seed=11, num_images=2, sampler="DDIM", eta=0.25, negative_prompt="dark")
    result = generate(engine_model, request)
    meta = result.metadata[1]
    for name, value in request.to_dict().items():
        if name != "seed":
            assert meta[name] == value
    assert meta["seed"] == 12 and meta["image_index"] == 1
    assert meta["model"]["hash"] == engine_model.content_hash and len(meta["model"]["hash"]) == 64
    assert meta["model"]["name"] == engine_model.name
    assert meta["scheduler"]["class"] == "DDIMScheduler"
    assert meta["scheduler"]["config"]["beta_schedule"] == "scaled_linear"
    assert {"torch", "diffusers", "transformers", "python"} <= set(meta["versions"])
    assert meta["device"] == "cpu" and meta["dtype"] == "fp32" and meta["precision_reason"]
    assert {"setup", "denoise", "decode", "clip_score", "total"} <= set(meta["timings"])
    assert meta["clip_score"] == result.clip_scores[1]
    assert result.parameters[1] == (
        f"{request.prompt}\nNegative prompt: dark\n"
        f"Steps: 4, Sampler: DDIM, CFG scale: 5, Seed: 12, Size: 32x32, Model hash: {engine_model.short_hash}, "
        f"Model: {engine_model.name}, Eta DDIM: 0.25, Version: ldmsite-engine 1.0")


def test_clip_scores_are_on_a_0_to_100_scale(engine_model, make_request):
    result = generate(engine_model, make_request(num_images=2))
    assert len(result.clip_scores) == 2
    assert all(0 <= score <= 100 for score in result.clip_scores)


def test_clip_guidance_changes_the_output_and_raises_the_mean_clip_score(engine_model, make_request):
    seeds = [21, 22, 23]
    plain = generate(engine_model, make_request(seed=seeds[0], num_images=3, steps=8))
    guided = generate(engine_model, make_request(seed=seeds[0], num_images=3, steps=8, clip_guidance_scale=1000,
                                                 clip_guidance_every=2, clip_guidance_start=0.25,
                                                 clip_guidance_end=1.0, clip_cutouts=2))
    assert guided.metadata[0]["clip_guided_steps"] == [2, 4, 6]
    assert all(not np.array_equal(pixels(a), pixels(b)) for a, b in zip(plain.images, guided.images))
    assert np.mean(guided.clip_scores) > np.mean(plain.clip_scores) + 1.0
    assert guided.timings["clip_guidance"] > 0


@pytest.mark.parametrize("sampler", CLIP_GUIDANCE_TESTED_SAMPLERS)
def test_clip_guidance_works_with_the_deterministic_samplers(engine_model, make_request, sampler):
    plain = generate(engine_model, make_request(sampler=sampler, steps=4))
    guided = generate(engine_model, make_request(sampler=sampler, steps=4, clip_guidance_scale=1000,
                                                 clip_guidance_every=1, clip_guidance_start=0.0,
                                                 clip_guidance_end=1.0, clip_cutouts=1))
    assert guided.clip_scores[0] > plain.clip_scores[0]


def test_each_image_gets_its_own_cutouts_so_a_guided_image_reproduces_alone():
    from generation.diffusion.clip import make_cutouts

    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    batch = make_cutouts(images, 3, 16, [torch.Generator().manual_seed(s) for s in (5, 6)])
    alone = make_cutouts(images[1:], 3, 16, [torch.Generator().manual_seed(6)])
    assert batch.shape == (6, 3, 16, 16)
    assert torch.equal(batch.view(3, 2, 3, 16, 16)[:, 1], alone)


def test_guided_steps_follow_every_n_inside_the_window(make_request):
    from generation.diffusion import guided_step_indices

    request = make_request(clip_guidance_scale=100, clip_guidance_every=4, clip_guidance_start=0.2,
                           clip_guidance_end=0.8)
    assert guided_step_indices(request, [14.6] * 20) == [4, 8, 12]
    assert guided_step_indices(make_request(), [14.6] * 20) == []


def test_clip_guidance_skips_the_zero_terminal_snr_noise_levels_above_stable_diffusions_own(make_request):
    """Three steps above SD's top sigma (14.6), as on the built-in model's schedule: the window
    is laid over the other twenty, so the guided steps are those of a plain 20-step schedule
    shifted by three."""
    from generation.diffusion import guided_step_indices

    request = make_request(clip_guidance_scale=100, clip_guidance_every=4, clip_guidance_start=0.2,
                           clip_guidance_end=0.8)
    levels = [4096.0, 51.6, 23.6] + list(np.geomspace(14.5, 0.2, 20))
    assert guided_step_indices(request, levels) == [7, 11, 15]
    assert guided_step_indices(request, [4096.0] * 5) == []


def test_clip_guidance_without_a_clip_model_is_refused(tiny_model_dir, make_request):
    from generation.diffusion import load_pipeline

    model = load_pipeline(str(tiny_model_dir), clip_source=False, dtype="fp32")
    assert model.clip is None and model.limits.has_clip is False
    result = generate(model, make_request(steps=2))
    assert result.clip_scores is None and result.metadata[0]["clip_score"] is None
    with pytest.raises(ValueError, match="CLIP"):
        generate(model, make_request(clip_guidance_scale=100))


def test_an_sdxl_directory_loads_and_generates(tmp_path):
    from generation.diffusion import load_pipeline

    from .tiny import build_tiny_sdxl_pipeline

    model = load_pipeline(str(build_tiny_sdxl_pipeline(tmp_path)), dtype="fp32")
    assert model.pipeline_class == "StableDiffusionXLPipeline" and model.family == "sdxl"
    request = validate_request({"prompt": "a green square", "width": 32, "height": 32, "steps": 2,
                                "sampler": "Euler a", "seed": 3}, model.limits)
    progress = []
    result = generate(model, request, on_progress=progress.append)
    assert result.images[0].size == (32, 32) and len(progress) == 2
    assert result.metadata[0]["model"]["pipeline_class"] == "StableDiffusionXLPipeline"
