"""Training code of the built-in model, and fine-tuning of any Stable Diffusion UNet.

Stages (each runnable alone, seeded, checkpointed, resumable), one module each:
``tokenizer_stage`` -> ``clip_stage`` (contrastive) -> ``vae_stage`` (gated on
reconstruction quality; ``vae_decoder_stage`` optionally refines its decoder) ->
``unet_stage`` (closed-form noising, caption dropout, EMA) -> ``export_stage`` (a
plain ``StableDiffusionPipeline`` directory plus ``clip/`` and ``latent_preview.json``).
Each stage reads what the previous ones wrote under ``work_dir`` and writes its
own result there; long stages checkpoint under ``work_dir/checkpoints/<stage>/``,
and every batch is drawn from an RNG seeded by ``(seed, stage, step)``, so a
resumed run continues exactly. Shared by the stages: ``common`` (checkpoints,
EMA, progress, ``stages.json``), ``images`` (image <-> tensor, sample grids),
``schedule`` (the noise schedule), ``presets``, ``data``.

Entry point: ``python -m generation.diffusion.training`` (see ``cli.main``).
Django-free: the ``train_ldm`` management command wraps ``cli.main``.
"""
