"""The AUTOMATIC1111 web UI API, the subset scripts and tools use: /sdapi/v1/ (and /internal/ping,
/internal/progress). Routes: `ldmsite.api.urls`; what each endpoint gives: docs/API.md.

Request and response bodies are A1111's own, so existing clients work unchanged. Auth: a
personal access token, as `Authorization: Bearer <token>` or as the password of HTTP Basic (any
user name) — most A1111 clients can only do Basic.

- `names`: a model's title, name and hash (one identity with its PNGs), schedule types;
- `options`: the model a token chose and the settings ldmsite has;
- `txt2img`: the request judged field by field (hires fix included), made into an ordinary job,
  waited for;
- `img2img`: img2img and inpainting, likewise (the init image and mask go to the service);
- `progress`: progress (with the live preview), interrupt, skip, /internal/progress;
- `probes`: models, samplers, schedulers, the hires fix's upscalers and latent-upscale-modes, the
  lists clients probe (LoRAs, …), png-info, memory, cmd-flags, refresh, /internal/ping.
"""

from .base import A1111View
from .names import checkpoint_title, find_checkpoint, model_hashes, scheduled_sampler, sd_model_item
from .options import Options, check_options, reported_options, selected_model
from .probes import (CmdFlags, Embeddings, Extensions, FaceRestorers, Hypernetworks, LatentUpscaleModes, Loras,
                     Memory, Ping, PngInfo, PromptStyles, RealesrganModels, Refresh, Samplers, Schedulers, ScriptInfo,
                     Scripts, SdModels, SdVae, Upscalers)
from .progress import InternalProgress, Interrupt, Progress, Skip, current_job, preview_png
from .img2img import Img2Img, img2img_request
from .txt2img import Txt2Img, to_request, txt2img_info, txt2img_request

__all__ = [
    "A1111View", "checkpoint_title", "find_checkpoint", "model_hashes", "scheduled_sampler", "sd_model_item",
    "Options", "check_options", "reported_options", "selected_model",
    "CmdFlags", "Embeddings", "Extensions", "FaceRestorers", "Hypernetworks", "LatentUpscaleModes", "Loras", "Memory",
    "Ping", "PngInfo", "PromptStyles", "RealesrganModels", "Refresh", "Samplers", "Schedulers", "ScriptInfo",
    "Scripts", "SdModels", "SdVae", "Upscalers",
    "InternalProgress", "Interrupt", "Progress", "Skip", "current_job", "preview_png",
    "Img2Img", "img2img_request", "Txt2Img", "to_request", "txt2img_info", "txt2img_request",
]
