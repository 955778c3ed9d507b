"""Tiny, seeded, offline diffusion components for tests (no downloads, milliseconds per step).

``build_tiny_pipeline(tmpdir)`` writes an ordinary diffusers ``StableDiffusionPipeline``
directory (plus a CLIPModel in ``clip/``, the convention of the built-in model) and returns its
path; without ``tmpdir`` it returns the pipeline object. Sizes: UNet (32, 64) channels on a
16x16 latent, a two-level VAE (scale factor 2), so images are 32x32 by default.
"""

from __future__ import annotations

from pathlib import Path

import torch

TINY_IMAGE_SIZE = 32
TINY_PROMPT_WORDS = ("a", "red", "green", "blue", "circle", "square", "on", "white", "black", "background")


def build_tiny_tokenizer():
    """A CLIP BPE tokenizer with a byte-level alphabet vocabulary and a few whole-word merges."""
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab: dict[str, int] = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for char in alphabet:
        vocab.setdefault(char, len(vocab))
    for char in alphabet:
        vocab.setdefault(char + "</w>", len(vocab))
    merges: list[tuple[str, str]] = []
    for word in TINY_PROMPT_WORDS:  # merge left to right so common words become single tokens
        current = word[0]
        for index, char in enumerate(word[1:], start=1):
            right = char + ("</w>" if index == len(word) - 1 else "")
            if (current, right) not in merges:
                merges.append((current, right))
            current = current + right
            vocab.setdefault(current, len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def _text_config():
    from transformers import CLIPTextConfig

    return CLIPTextConfig(bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=32, intermediate_size=37,
                          num_attention_heads=4, num_hidden_layers=2, vocab_size=1000, max_position_embeddings=77,
                          projection_dim=32)


def build_tiny_components(seed: int = 0) -> dict:
    """UNet, VAE, text encoder, tokenizer and a PNDM scheduler configured like SD1.5's."""
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32, attention_head_dim=4,
        norm_num_groups=8,
    )
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(
        block_out_channels=(16, 32), in_channels=3, out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), latent_channels=4, norm_num_groups=8,
        sample_size=TINY_IMAGE_SIZE,
    )
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(_text_config())
    scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              skip_prk_steps=True, set_alpha_to_one=False, steps_offset=1)
    return {"unet": unet.eval(), "vae": vae.eval(), "text_encoder": text_encoder.eval(),
            "tokenizer": build_tiny_tokenizer(), "scheduler": scheduler,
            "safety_checker": None, "feature_extractor": None, "image_encoder": None}


def build_tiny_clip(seed: int = 3, shared_bias: float = 1.0):
    """A random CLIPModel with 32-pixel images (patch 8) and the tiny text tower's config.

    A random CLIP gives image/text cosines around zero, which the 0-100 CLIP score clips to 0.
    Real CLIP models score matching pairs around 0.2-0.35, so we give both towers the same
    final projection and the same bias after their last layer norm: embeddings then share a
    common direction and cosines start positive, while guidance still has the rest to move.
    """
    from transformers import CLIPConfig, CLIPModel, CLIPVisionConfig

    torch.manual_seed(seed)
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                              image_size=32, patch_size=8, projection_dim=32)
    config = CLIPConfig(text_config=_text_config().to_dict(), vision_config=vision.to_dict(), projection_dim=32)
    model = CLIPModel(config).eval()
    with torch.no_grad():
        model.text_projection.weight.copy_(model.visual_projection.weight)
        bias = torch.randn(32, generator=torch.Generator().manual_seed(seed)) * shared_bias
        model.text_model.final_layer_norm.bias.copy_(bias)
        model.vision_model.post_layernorm.bias.copy_(bias)
    return model


def build_tiny_pipeline(tmpdir: str | Path | None = None, with_clip: bool = True, seed: int = 0):
    """Save a tiny SD pipeline directory to ``tmpdir`` and return its path, or, without
    ``tmpdir``, return the ``StableDiffusionPipeline`` object (``with_clip`` then adds a
    ``clip_model`` attribute)."""
    from diffusers import StableDiffusionPipeline

    components = build_tiny_components(seed)
    pipeline = StableDiffusionPipeline(**components, requires_safety_checker=False)
    pipeline.set_progress_bar_config(disable=True)
    clip = build_tiny_clip() if with_clip else None
    if tmpdir is None:
        if clip is not None:
            pipeline.clip_model = clip
        return pipeline
    path = Path(tmpdir)
    pipeline.save_pretrained(path, safe_serialization=True)
    if clip is not None:
        clip.save_pretrained(path / "clip", safe_serialization=True)
        components["tokenizer"].save_pretrained(path / "clip")
    return path


def build_tiny_sdxl_pipeline(tmpdir: str | Path, seed: int = 0) -> Path:
    """A tiny ``StableDiffusionXLPipeline`` directory (two text encoders, text_time conditioning)."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4), use_linear_projection=True,
        addition_embed_type="text_time", addition_time_embed_dim=8, transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=80, cross_attention_dim=64, norm_num_groups=8,
    )
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(
        block_out_channels=(16, 32), in_channels=3, out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), latent_channels=4, norm_num_groups=8,
        sample_size=TINY_IMAGE_SIZE,
    )
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(_text_config())
    text_encoder_2 = CLIPTextModelWithProjection(_text_config())
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       steps_offset=1, timestep_spacing="leading")
    pipeline = StableDiffusionXLPipeline(vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
                                         tokenizer=build_tiny_tokenizer(), tokenizer_2=build_tiny_tokenizer(),
                                         unet=unet, scheduler=scheduler)
    path = Path(tmpdir)
    pipeline.save_pretrained(path, safe_serialization=True)
    return path


def build_tiny_inpainting_pipeline(tmpdir: str | Path, seed: int = 0) -> Path:
    """A tiny SD pipeline directory whose UNet takes 9 channels (latents, mask, masked-image
    latents), saved as a ``StableDiffusionInpaintPipeline`` as Stable Diffusion's inpainting
    checkpoints are, with no CLIP model."""
    from diffusers import StableDiffusionInpaintPipeline, UNet2DConditionModel

    components = build_tiny_components(seed)
    torch.manual_seed(seed)
    components["unet"] = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=16, in_channels=9, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32, attention_head_dim=4,
        norm_num_groups=8,
    ).eval()
    pipeline = StableDiffusionInpaintPipeline(**components, requires_safety_checker=False)
    path = Path(tmpdir)
    pipeline.save_pretrained(path, safe_serialization=True)
    return path


def build_tiny_lora_layers(pipeline, seed: int = 0, rank: int = 2, scale: float = 0.3, text_encoder: bool = True,
                           widen: int = 0) -> dict:
    """Random LoRA layers for a tiny pipeline: {(component, module path): (down, up)} on the UNet's
    attention projections (to_q/k/v/out.0) and, with ``text_encoder``, the text encoder's
    self-attention projections. ``widen`` adds that many input features to every down weight (a
    LoRA made for a wider model, which must not fit)."""
    generator = torch.Generator().manual_seed(seed)
    layers = {}
    components = [("unet", pipeline.unet)] + ([("text_encoder", pipeline.text_encoder)] if text_encoder else [])
    for component, model in components:
        for path, module in model.named_modules():
            module = getattr(module, "base_layer", module)  # a model that has adapters loaded already
            wanted = (".to_q", ".to_k", ".to_v", ".to_out.0") if component == "unet" else \
                ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj")
            if isinstance(module, torch.nn.Linear) and path.endswith(wanted):
                down = torch.randn(rank, module.in_features + widen, generator=generator) * scale
                up = torch.randn(module.out_features, rank, generator=generator) * scale
                layers[(component, path)] = (down, up)
    return layers


def tiny_lora_state_dict(layers: dict, key_format: str = "kohya", alpha: float | None = None) -> dict:
    """The layers of :func:`build_tiny_lora_layers` as a state dict in kohya/A1111 keys
    (``lora_unet_..._lora_down.weight``, ``.alpha``: ``alpha`` or the rank) or diffusers/PEFT keys
    (``unet.<path>.lora_A.weight``; alpha = rank, diffusers' default without metadata)."""
    state = {}
    for (component, path), (down, up) in layers.items():
        if key_format == "kohya":
            key = ("lora_unet_" if component == "unet" else "lora_te_") + path.replace(".", "_")
            state[f"{key}.lora_down.weight"] = down.clone()
            state[f"{key}.lora_up.weight"] = up.clone()
            state[f"{key}.alpha"] = torch.tensor(float(alpha if alpha is not None else down.shape[0]))
        else:
            state[f"{component}.{path}.lora_A.weight"] = down.clone()
            state[f"{component}.{path}.lora_B.weight"] = up.clone()
    return state


def with_engine_kernels(pipe):
    """``pipe`` with the Linear/Conv2d kernels the engine gives every loaded model (batch-invariant
    on the CPU, generation/diffusion/invariance.py), so that "bit for bit with plain diffusers"
    compares plain diffusers' loop doing the same arithmetic. Before any LoRA is loaded into it:
    adapter layers keep the stock kernels, as in the engine."""
    from generation.diffusion import make_batch_invariant

    make_batch_invariant(pipe.unet, pipe.vae, pipe.text_encoder)
    return pipe
