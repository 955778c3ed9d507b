"""Each stage on tiny settings: it runs, its loss falls, checkpoints resume exactly, export loads."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from generation.diffusion import dataset as d
from generation.diffusion.training import unet_stage
from generation.diffusion.training.cli import main
from generation.diffusion.training.clip_stage import load_clip, text_encoder_from_clip, train_clip
from generation.diffusion.training.common import latest_checkpoint, noised_and_target
from generation.diffusion.training.data import FolderData, ShapesData, read_folder
from generation.diffusion.training.export_stage import export_pipeline
from generation.diffusion.training.presets import get_preset
from generation.diffusion.training.schedule import TERMINAL_ALPHA_BAR, ddim_scheduler, zero_terminal_snr_betas
from generation.diffusion.training.tokenizer_stage import load_tokenizer, tokenize, train_tokenizer
from generation.diffusion.training.unet_stage import CaptionEmbeddings, load_unet, train_unet
from generation.diffusion.training.vae_decoder_stage import finetune_vae_decoder
from generation.diffusion.training.vae_stage import load_vae, train_vae


def tiny(**overrides):
    cfg = get_preset("tiny").with_overrides(threads=None, sample_every=10_000, **overrides)
    return cfg


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny run of every stage, shared by the tests below (keeps the suite fast)."""
    work = tmp_path_factory.mktemp("work")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models gain nothing from threads, and the CI box is shared
    cfg = tiny(clip_steps=20, vae_steps=20, vae_max_steps=20, unet_steps=20, checkpoint_every=10)
    data = ShapesData(cfg.p_full, cfg.p_empty)
    train_tokenizer(cfg, work, data.caption_corpus())
    train_clip(cfg, work, data)
    train_vae(cfg, work, data)
    train_unet(cfg, work, data)
    finetune_vae_decoder(cfg, work, data, steps=4, gate_every=4)
    export_pipeline(cfg, work, work / "pipeline", data)
    yield cfg, work, json.loads((work / "stages.json").read_text())
    torch.set_num_threads(threads)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_noising_is_the_closed_form_at_any_timestep_and_the_target_lets_x0_be_recovered(prediction_type):
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, prediction_type=prediction_type)
    gen = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(4, 4, 8, 8, generator=gen), torch.randn(4, 4, 8, 8, generator=gen)
    t = torch.tensor([0, 250, 700, 999])
    xt, target = noised_and_target(scheduler, x0, noise, t)
    a = scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    torch.testing.assert_close(xt, a.sqrt() * x0 + (1 - a).sqrt() * noise)  # Ho et al. 2020, eq. 4
    if prediction_type == "epsilon":
        torch.testing.assert_close(target, noise)
    else:  # x_0 = sqrt(abar) x_t - sqrt(1 - abar) v (Salimans & Ho 2022)
        torch.testing.assert_close(a.sqrt() * xt - (1 - a).sqrt() * target, x0, atol=1e-5, rtol=1e-5)


def test_noising_refuses_a_prediction_type_it_cannot_train():
    from diffusers import DDPMScheduler

    with pytest.raises(ValueError, match="sample"):
        noised_and_target(DDPMScheduler(prediction_type="sample"), torch.zeros(1, 4, 2, 2), torch.zeros(1, 4, 2, 2), torch.tensor([1]))


def test_tokenizer_loads_with_the_stock_clip_tokenizer_and_keeps_words_whole(trained):
    from transformers import CLIPTokenizer

    _, work, _ = trained
    tok = CLIPTokenizer.from_pretrained(work / "tokenizer")
    ids = tok("a large yellow circle in the center on a blue background").input_ids
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    assert len(ids) == 13  # eleven words, one token each
    assert tok.model_max_length == 16


@pytest.mark.parametrize("stage", ["clip", "vae", "unet"])
def test_stage_loss_falls(trained, stage):
    _, _, record = trained
    assert record[stage]["final_loss"] < record[stage]["initial_loss"], record[stage]


def test_vae_records_its_measured_scaling_factor_and_gate(trained):
    _, work, record = trained
    vae = load_vae(work)
    assert vae.config.scaling_factor == pytest.approx(record["vae"]["scaling_factor"])
    assert record["vae"]["gate"] and set(d.ATTRIBUTES) <= set(record["vae"]["gate"][-1])


def test_decoder_refinement_keeps_the_encoder_and_is_what_export_ships(trained):
    from diffusers import AutoencoderKL

    _, work, record = trained
    base, refined = load_vae(work), load_vae(work, prefer_decoder_finetune=True)
    shipped = AutoencoderKL.from_pretrained(work / "pipeline" / "vae", torch_dtype=torch.float32)
    for k, v in base.encoder.state_dict().items():
        assert torch.equal(v, refined.encoder.state_dict()[k])
    changed = [k for k, v in base.decoder.state_dict().items() if not torch.equal(v, refined.decoder.state_dict()[k])]
    assert changed
    k = changed[0]
    torch.testing.assert_close(shipped.decoder.state_dict()[k], refined.decoder.state_dict()[k])
    assert record["vae_decoder"]["steps"] == 4 and record["vae_decoder"]["gate"]


def test_a_resumed_decoder_refinement_remembers_the_gates_it_already_ran(trained, tmp_path):
    cfg, work, _ = trained
    (tmp_path / "vae").symlink_to(work / "vae")
    cfg = cfg.with_overrides(checkpoint_every=2, vae_gate=1.01)  # a gate that never passes, so it never stops early
    data = ShapesData(cfg.p_full, cfg.p_empty)
    finetune_vae_decoder(cfg, tmp_path, data, steps=4, gate_every=2)
    assert latest_checkpoint(tmp_path, "vae_decoder").name == "step-0000002.pt"
    finetune_vae_decoder(cfg, tmp_path, data, steps=6, gate_every=2, resume=True)  # continues 2 -> 6
    record = json.loads((tmp_path / "stages.json").read_text())["vae_decoder"]
    assert [g["step"] for g in record["gate"]] == [2, 4, 6]
    assert record["gate_passed"] is False


def test_unet_resumes_exactly_from_a_checkpoint_and_counts_the_time_spent_before_it(trained, tmp_path):
    cfg, work, _ = trained
    for name in ("tokenizer", "clip", "vae"):
        (tmp_path / name).symlink_to(work / name)
    cfg = cfg.with_overrides(unet_steps=6, checkpoint_every=3)
    data = ShapesData(cfg.p_full, cfg.p_empty)
    train_unet(cfg, tmp_path, data)
    straight = {k: v.clone() for k, v in load_unet(tmp_path).state_dict().items()}
    ckpt = latest_checkpoint(tmp_path, "unet")
    assert ckpt.name == "step-0000003.pt"
    state = torch.load(ckpt, weights_only=False)
    assert state["seconds"] > 0
    state["seconds"] = 1000.0  # as if the first segment had run for 1,000 s
    torch.save(state, ckpt)
    train_unet(cfg, tmp_path, data, resume=True)  # continues 3 -> 6 from the checkpoint
    resumed = load_unet(tmp_path).state_dict()
    for k in straight:
        torch.testing.assert_close(resumed[k], straight[k], msg=k)
    seconds = json.loads((tmp_path / "stages.json").read_text())["unet"]["seconds"]
    assert 1000.0 <= seconds < 1000.0 + 600


def test_caption_embeddings_encode_each_distinct_caption_once_and_equal_what_the_text_tower_gives(trained):
    cfg, work, _ = trained
    tokenizer = load_tokenizer(work)
    tower = text_encoder_from_clip(load_clip(work))
    encoded: list[int] = []

    def counting_tower(ids):
        encoded.append(len(ids))
        return tower(ids)

    cache = CaptionEmbeddings(counting_tower, tokenizer, max_entries=3)
    captions = ["a red circle", "", "a red circle", "a blue square on a white background"]
    with torch.no_grad():
        direct = tower(tokenize(tokenizer, captions))[0]
    torch.testing.assert_close(cache(captions), direct, atol=1e-5, rtol=1e-5)
    assert encoded == [3]  # three distinct captions, one tower call
    torch.testing.assert_close(cache(["", "a red circle"]), direct[[1, 0]], atol=1e-5, rtol=1e-5)
    assert encoded == [3]  # all known: no tower call
    cache(["a yellow triangle"])  # a fourth caption passes the bound: the cache starts again
    assert encoded == [3, 1] and len(cache) == 1


def test_a_unet_phase_can_start_from_an_exported_unet_and_refuses_a_different_architecture(trained, tmp_path):
    cfg, work, _ = trained
    for name in ("tokenizer", "clip", "vae"):
        (tmp_path / name).symlink_to(work / name)
    data = ShapesData(cfg.p_full, cfg.p_empty)
    init = load_unet(work).state_dict()
    frozen = cfg.with_overrides(unet_steps=2, unet_lr=0.0)  # no learning: what is saved is where it started
    train_unet(frozen.with_overrides(unet_init=str(work / "unet")), tmp_path, data)
    started = load_unet(tmp_path).state_dict()
    for k in init:
        torch.testing.assert_close(started[k], init[k], msg=k)
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    for name in ("tokenizer", "clip", "vae"):
        (fresh / name).symlink_to(work / name)
    train_unet(frozen, fresh, data)  # without --unet-init the same run starts from random weights
    assert not torch.equal(load_unet(fresh).state_dict()["conv_in.weight"], init["conv_in.weight"])
    with pytest.raises(SystemExit, match="--unet-init .*does not match"):
        train_unet(cfg.with_overrides(unet_channels=(32, 32, 32), unet_init=str(work / "unet")), tmp_path, data)


def test_exported_directory_loads_with_plain_diffusers_and_generates(trained):
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline
    from transformers import CLIPModel

    cfg, work, _ = trained
    out = work / "pipeline"
    pipe = StableDiffusionPipeline.from_pretrained(out, torch_dtype=torch.float32)
    # The default sampler ldmsite offers for the model (Euler Karras) on the training schedule.
    assert isinstance(pipe.scheduler, EulerDiscreteScheduler) and pipe.scheduler.config.use_karras_sigmas
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    assert list(pipe.scheduler.config.trained_betas) == zero_terminal_snr_betas(cfg.num_train_timesteps)
    assert pipe.safety_checker is None
    image = pipe("a red circle", num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np").images[0]
    assert image.shape == (64, 64, 3) and np.isfinite(image).all()
    # clip/ (CLIP scores and guidance) is the CLIP whose text tower the pipeline encodes prompts with.
    clip = CLIPModel.from_pretrained(out / "clip").eval()
    ids = pipe.tokenizer(["a red circle"], padding="max_length", truncation=True,
                         max_length=pipe.tokenizer.model_max_length, return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(clip.text_model(ids).last_hidden_state, pipe.text_encoder(ids).last_hidden_state)
    preview = json.loads((out / "latent_preview.json").read_text())
    assert np.array(preview["matrix"]).shape == (4, 3) and len(preview["bias"]) == 3
    assert preview["output_range"] == "-1..1"


def test_export_ships_a_guide_unet_the_engine_uses_for_autoguidance(trained, tmp_path):
    """``--guide-unet`` (e.g. the UNet a phase started from) becomes the pipeline's guide_unet/; a
    UNet that does not fit is refused before the export touches anything, and a later export
    without the option removes a stale guide."""
    from diffusers import UNet2DConditionModel

    from generation.diffusion import generate, load_pipeline, validate_request

    cfg, work, _ = trained
    data = ShapesData(cfg.p_full, cfg.p_empty)
    guide = tmp_path / "guide"
    load_unet(work).save_pretrained(guide)
    out = tmp_path / "pipeline"
    export_pipeline(cfg, work, out, data, guide_unet=guide)
    model = load_pipeline(str(out), device="cpu", dtype="fp32")
    assert model.limits.has_guide_unet
    request = validate_request({"prompt": "a red circle", "steps": 2, "seed": 1, "guidance_scale": 2,
                                "autoguidance_scale": 1}, model.limits)
    assert generate(model, request).metadata[0]["autoguidance_scale"] == 1
    misfit = UNet2DConditionModel(sample_size=16, in_channels=4, out_channels=4, block_out_channels=(32, 32),
                                  down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                  up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=24,
                                  layers_per_block=1, norm_num_groups=8)
    misfit.save_pretrained(tmp_path / "misfit")
    exported = sorted(p.relative_to(out) for p in out.rglob("*"))
    with pytest.raises(ValueError, match="cross_attention_dim"):
        export_pipeline(cfg, work, out, data, guide_unet=tmp_path / "misfit")
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == exported  # nothing half-written
    export_pipeline(cfg, work, out, data)
    assert not (out / "guide_unet").exists()


def _write_folder(root: Path, as_jsonl: bool) -> Path:
    root.mkdir()
    images, specs = d.generate(4, seed=21)
    records = []
    for i, (image, spec) in enumerate(zip(images, specs)):
        Image.fromarray(image).resize((80, 64)).save(root / f"img{i}.png")
        text = d.caption(spec.attributes())
        if as_jsonl:
            records.append(json.dumps({"file_name": f"img{i}.png", "text": text}))
        else:
            (root / f"img{i}.txt").write_text(text)
    if as_jsonl:
        (root / "metadata.jsonl").write_text("\n".join(records) + "\n")
    return root


@pytest.mark.parametrize("as_jsonl", [False, True])
def test_user_folder_reads_txt_captions_or_metadata_jsonl(tmp_path, as_jsonl):
    root = _write_folder(tmp_path / "data", as_jsonl)
    pairs = read_folder(root)
    assert len(pairs) == 4 and all(text.startswith("a ") for _, text in pairs)
    data = FolderData(root, 32)
    images, captions = data.batch(np.random.default_rng(0), 3, p_empty=0.0)
    assert images.shape == (3, 32, 32, 3) and all(captions)


def test_finetuning_a_pipeline_unet_on_a_user_folder_runs_and_saves(trained, tmp_path):
    from diffusers import StableDiffusionPipeline

    _, work, _ = trained
    root = _write_folder(tmp_path / "data", as_jsonl=False)
    out = tmp_path / "finetuned"
    before = StableDiffusionPipeline.from_pretrained(work / "pipeline", torch_dtype=torch.float32).unet.state_dict()
    main(["--finetune", str(work / "pipeline"), "--data", str(root), "--output", str(out), "--work-dir", str(tmp_path / "ft"), "--steps", "4", "--batch-size", "2", "--lr", "1e-3", "--checkpoint-every", "2"])
    after = StableDiffusionPipeline.from_pretrained(out, torch_dtype=torch.float32)
    assert any(not torch.equal(before[k], v) for k, v in after.unet.state_dict().items())
    assert (tmp_path / "ft" / "checkpoints" / "finetune" / "step-0000002.pt").exists()
    image = after("a red circle", num_inference_steps=2, output_type="np").images[0]
    assert np.isfinite(image).all()


def test_cli_runs_chosen_stages_on_a_user_folder(tmp_path):
    root = _write_folder(tmp_path / "data", as_jsonl=True)
    work = tmp_path / "work"
    main(["--preset", "tiny", "--data", str(root), "--work-dir", str(work), "--stages", "tokenizer,clip", "--clip-steps", "3", "--threads", "0"])
    assert (work / "tokenizer" / "tokenizer.json").exists() and (work / "clip" / "config.json").exists()
    assert not (work / "vae").exists()


def test_cli_refuses_a_unet_init_folder_without_a_unet_before_any_stage_runs(tmp_path):
    work = tmp_path / "work"
    with pytest.raises(SystemExit, match="--unet-init .*no exported UNet there"):
        main(["--preset", "tiny", "--work-dir", str(work), "--stages", "tokenizer,clip,unet", "--unet-init", str(tmp_path / "missing")])
    assert not (work / "tokenizer").exists()


def test_cli_takes_the_share_of_full_captions_and_refuses_one_that_leaves_no_room_for_empty_captions(tmp_path):
    work = tmp_path / "work"
    with pytest.raises(SystemExit, match=r"--p-full 0\.95: must be between 0 and 0\.9"):
        main(["--preset", "tiny", "--work-dir", str(work), "--stages", "tokenizer", "--p-full", "0.95"])
    assert not (work / "tokenizer").exists()
    main(["--preset", "tiny", "--work-dir", str(work), "--stages", "tokenizer", "--p-full", "0.8"])
    recorded = json.loads((work / "config.json").read_text())
    assert recorded["p_full"] == 0.8 and recorded["p_empty"] == 0.1
    # The config itself refuses it too, so code that builds one cannot get a silent caption mix.
    with pytest.raises(ValueError, match="--p-full 0.95"):
        get_preset("builtin").with_overrides(p_full=0.95)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_cli_refuses_to_train_the_unet_on_cuda_where_torch_sees_no_gpu_before_any_stage_runs(tmp_path):
    work = tmp_path / "work"
    with pytest.raises(SystemExit, match="--unet-device cuda: PyTorch sees no CUDA device"):
        main(["--preset", "tiny", "--work-dir", str(work), "--stages", "tokenizer,unet", "--unet-device", "cuda"])
    assert not (work / "tokenizer").exists()
    with pytest.raises(ValueError, match="--unet-device 'tpu'"):
        get_preset("builtin").with_overrides(unet_device="tpu")


def test_ema_weights_resumed_from_a_checkpoint_land_on_the_device_the_model_trains_on():
    from generation.diffusion.training.common import EMA

    model = torch.nn.Linear(3, 2)
    saved = EMA(model).state_dict()
    on_meta = EMA(torch.nn.Linear(3, 2, device="meta"))  # stands in for a GPU model on this CPU-only machine
    on_meta.load_state_dict(saved)
    assert all(v.device.type == "meta" for v in on_meta.shadow.values())


@pytest.mark.parametrize("p_full", [0.6, 0.8])
def test_the_unet_stage_draws_the_configured_share_of_fully_specified_captions(p_full):
    rng = np.random.default_rng(0)
    specs = [d.sample_spec(rng) for _ in range(50)]
    bank = {"attributes": [s.attributes() for s in specs], "captions": None}
    captions = unet_stage._bank_captions(bank, rng.integers(0, 50, size=4000), rng, tiny(p_full=p_full))
    full = sum(len(d.parse_caption(c)) == len(d.ATTRIBUTES) for c in captions) / len(captions)
    empty = captions.count("") / len(captions)
    # Partial captions keep each of four attributes with p = 1/2, so 1/16 of them are full too.
    assert full == pytest.approx(p_full + (1 - p_full - 0.1) / 16, abs=0.03)
    assert empty == pytest.approx(0.1, abs=0.02)


def test_builtin_schedule_ends_in_pure_noise_and_every_sampler_can_start_there():
    from generation.diffusion.samplers import SAMPLERS, build_scheduler

    sched = ddim_scheduler()
    assert sched.config.prediction_type == "v_prediction"
    assert float(sched.alphas_cumprod[-1]) == pytest.approx(TERMINAL_ALPHA_BAR, rel=1e-3)
    assert float(sched.alphas_cumprod[0]) == pytest.approx(1 - 0.00085, rel=1e-4)  # the clean end is Stable Diffusion's
    sched.set_timesteps(25)
    assert int(sched.timesteps[0]) == 999
    for name in SAMPLERS:
        other = build_scheduler(name, sched.config)
        other.set_timesteps(25)
        assert float(other.alphas_cumprod[-1]) == pytest.approx(TERMINAL_ALPHA_BAR, rel=1e-3), name
        if hasattr(other, "sigmas"):
            assert torch.isfinite(other.sigmas).all(), name
