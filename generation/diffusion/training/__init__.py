"""Training code of the built-in model, and fine-tuning of any Stable Diffusion UNet.

Stages (each runnable alone, seeded, checkpointed, resumable):
tokenizer -> clip (contrastive) -> vae (gated on reconstruction quality) ->
unet (closed-form noising, caption dropout, EMA) -> export (a plain
``StableDiffusionPipeline`` directory plus ``clip/`` and ``latent_preview.json``).

Entry point: ``python -m generation.diffusion.training`` (see ``cli.main``).
Django-free: the ``train_ldm`` management command wraps ``cli.main``.
"""
