"""Names as A1111 clients use them: a model's title, name and hash; schedule types.

**One model identity.** A model's hash is the digest `generation.diffusion.hashing` computes over
its directory (a sha256 over its files): the registry stores it as the model's ``revision``, the
engine writes its first 10 hex digits into every PNG ("Model hash"), and here it is sd-models'
``hash``/``sha256``, txt2img's ``sd_model_hash`` and options' ``sd_checkpoint_hash``.

Client text is parsed in linear time (no backtracking regex on it).
"""

from __future__ import annotations

from typing import Any

from generation.diffusion import SAMPLERS, resolve_sampler
from generation.diffusion.hashing import SHORT_HASH_DIGITS
from generation.models import DiffusionModel

HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
SHA256_DIGITS = 64
MAX_CHECKPOINT_NAME = 1000  # longer names match no model (titles are slug + hash)


# --- Models ------------------------------------------------------------------------------------

def is_hex(text: str) -> bool:
    return bool(text) and all(character in HEX_DIGITS for character in text)


def model_hashes(model: DiffusionModel) -> tuple[str | None, str | None]:
    """(short hash, sha256): the first 10 hex digits and the whole content hash the registry
    recorded (`generation.registry.record_content_hash`; never computed here, on a request)."""
    revision = (model.revision or "").strip().lower()
    if len(revision) == SHA256_DIGITS and is_hex(revision):
        return revision[:SHORT_HASH_DIGITS], revision
    return (revision[:SHORT_HASH_DIGITS] or None), None


def checkpoint_title(model: DiffusionModel) -> str:
    short, _ = model_hashes(model)
    return f"{model.slug} [{short}]" if short else model.slug


def directory_name(model: DiffusionModel) -> str:
    """The name the engine gives a local model (the PNG's "Model: ..."): its directory's name."""
    return model.source.rstrip("/").split("/")[-1] or model.slug


def sd_model_item(model: DiffusionModel) -> dict:
    short, sha256 = model_hashes(model)
    return {"title": checkpoint_title(model), "model_name": model.slug, "hash": short, "sha256": sha256,
            "filename": directory_name(model), "config": None}


def split_title(text: str) -> tuple[str, str | None]:
    """``"name [hash]"`` -> ``("name", "hash")``; anything else -> ``(text, None)``. Linear time."""
    if not text.endswith("]"):
        return text, None
    opening = text.rfind("[")
    digest = text[opening + 1:-1]
    if opening < 0 or not is_hex(digest):
        return text, None
    return text[:opening].rstrip(), digest.lower()


def find_checkpoint(value: Any) -> DiffusionModel | None:
    """An enabled model by any name A1111 accepts for it: its title (``slug [hash]``), its slug, its
    display name, its directory's name (what the PNG names), its short hash or its whole sha256.
    Case does not matter; a title whose hash is not the model's matches nothing."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    if not text or len(text) > MAX_CHECKPOINT_NAME:
        return None
    wanted = text.casefold()
    name, digest = split_title(text)
    best: tuple[int, DiffusionModel] | None = None
    for model in DiffusionModel.objects.filter(enabled=True).order_by("-is_default", "slug"):
        short, sha256 = model_hashes(model)
        names = {model.slug.casefold(), model.name.casefold(), directory_name(model).casefold()}
        if wanted == checkpoint_title(model).casefold():
            rank = 0
        elif wanted in names:
            rank = 1
        elif wanted in {short, sha256} - {None}:
            rank = 2
        elif digest is not None and name.casefold() in names and (
                short is None or (sha256 or short).startswith(digest)):
            rank = 3  # a title with an older A1111 hash length, or for a model not hashed yet
        else:
            continue
        if best is None or rank < best[0]:
            best = (rank, model)
    return best[1] if best else None


# --- Schedule types (A1111 >= 1.9 splits "DPM++ 2M Karras" into sampler + schedule) -------------

# A1111's schedule types (modules/sd_schedulers.py): name, label, aliases, default_rho, need_inner_model.
A1111_SCHEDULES = [
    ("automatic", "Automatic", None, -1.0, False), ("uniform", "Uniform", None, -1.0, True),
    ("karras", "Karras", None, 7.0, False), ("exponential", "Exponential", None, -1.0, False),
    ("polyexponential", "Polyexponential", None, 1.0, False),
    ("sgm_uniform", "SGM Uniform", ["SGMUniform"], -1.0, True), ("kl_optimal", "KL Optimal", None, -1.0, False),
    ("align_your_steps", "Align Your Steps", None, -1.0, False), ("simple", "Simple", None, -1.0, True),
    ("normal", "Normal", None, -1.0, True), ("ddim", "DDIM", None, -1.0, True), ("beta", "Beta", None, -1.0, True),
]
# What ldmsite offers: automatic and normal are a sampler's own spacing (the model's schedule),
# karras its Karras variant.
OFFERED_SCHEDULES = ("automatic", "karras", "normal")
SCHEDULE_NAMES = {key.casefold(): name for name, label, aliases, _, _ in A1111_SCHEDULES
                  for key in (name, label, *(aliases or ()))}
SCHEDULERS = [{"name": name, "label": label, "aliases": aliases, "default_rho": rho, "need_inner_model": inner}
              for name, label, aliases, rho, inner in A1111_SCHEDULES if name in OFFERED_SCHEDULES]
KARRAS_SAMPLERS = [name[:-len(" Karras")] for name in SAMPLERS if name.endswith(" Karras")]


def scheduled_sampler(sampler: str, scheduler: Any) -> tuple[str, str | None]:
    """(the sampler to run, an error for the ``scheduler`` field or None).

    Like A1111, a sampler name that ends in its schedule ("DPM++ 2M Karras") keeps it. A sampler
    ldmsite does not know is returned as given, for request validation to name.
    """
    if scheduler is None or scheduler == "":
        return sampler, None
    offered = ", ".join(OFFERED_SCHEDULES)
    if not isinstance(scheduler, str):
        return sampler, f"must be one of: {offered}"
    schedule = SCHEDULE_NAMES.get(scheduler.strip().casefold())
    if schedule is None:
        return sampler, f"unknown schedule type; ldmsite offers {offered}"
    if schedule not in OFFERED_SCHEDULES:
        return sampler, (f"ldmsite has no {schedule} schedule; it offers automatic and normal (the sampler's own "
                         f"spacing) and karras (with {', '.join(KARRAS_SAMPLERS)})")
    if schedule != "karras":
        return sampler, None
    try:
        canonical = resolve_sampler(sampler)
    except KeyError:
        try:
            return resolve_sampler(f"{sampler} Karras"), None  # offered only with Karras ("DPM++ SDE")
        except KeyError:
            return sampler, None  # request validation names the unknown sampler
    if canonical.endswith(" Karras"):
        return canonical, None
    if f"{canonical} Karras" in SAMPLERS:
        return f"{canonical} Karras", None
    return sampler, f"the Karras schedule is offered with {', '.join(KARRAS_SAMPLERS)}, not with {canonical}"
