"""LoRAs as a resource of the site: upload (checked against the chosen base model), download in
kohya (A1111) format, edit, delete, search. Pages and the API call these; rules of who may see a
LoRA live on the model (`Lora.can_view`, `Lora.objects.visible_to`, `usable_by`).

A request names a LoRA (``<lora:name:w>`` or the ``loras`` field): its owner by ``name``, anyone
else -- when it is public or unlisted and not hidden -- by ``username/name``; only LoRAs made for
the request's model count (`Lora.objects.usable_by`, which admission and the worker use).
"""

from __future__ import annotations

import functools
import re
import tempfile
from pathlib import Path

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.http import HttpResponse

from gallery.models import LORA_NAME_PATTERN, AuditEntry, Lora, lora_file_name
from generation.admission import Refusal, check_published_text
from generation.models import DiffusionModel
from generation.workers import resolve_source

MAX_LORA_UPLOAD_BYTES = getattr(settings, "LDM_MAX_LORA_BYTES", 512 * 1024 * 1024)
SEARCH_LIMIT = 200


@functools.lru_cache(maxsize=8)
def _skeleton(directory: str, stamp: float):
    from generation.diffusion.lora import model_skeleton

    return model_skeleton(directory)


def model_skeleton_for(model: DiffusionModel):
    """The base model's layers (names and shapes, no weights) to check an upload against."""
    directory = Path(resolve_source(model.source))
    if not (directory / "unet").is_dir():
        raise Refusal({"base_model": f"model {model.slug!r} is not a local diffusers directory this site can "
                                     "check a LoRA against"})
    return _skeleton(str(directory), (directory / "unet" / "config.json").stat().st_mtime)


def check_name(name) -> str:
    name = (name or "").strip() if isinstance(name, str) else ""
    if not re.match(LORA_NAME_PATTERN, name):
        raise Refusal({"name": "must be 1 to 60 letters, digits, _ . or - (starting with a letter or digit), "
                               "as written in <lora:name:weight>"})
    return name


def check_visibility(visibility) -> str:
    if visibility not in Lora.Visibility.values:
        raise Refusal({"visibility": f"must be one of: {', '.join(Lora.Visibility.values)}"})
    return visibility


def _summary(lora_file) -> dict:
    """Rank, alpha and layer count of a read LoRA, from its down weights and alphas."""
    state = lora_file.state_dict
    downs = [key for key in state if key.endswith((".lora_down.weight", ".lora_A.weight"))]
    alphas = [float(state[key]) for key in state if key.endswith(".alpha") and state[key].numel() == 1]
    rank = int(state[downs[0]].shape[0]) if downs else None
    return {"rank": rank, "alpha": alphas[0] if alphas else None, "layer_count": len(downs),
            "key_format": lora_file.format}


def read_upload(upload) -> bytes:
    """An uploaded file's bytes, refused beyond the size cap before reading it all."""
    if upload is None:
        raise Refusal({"file": "choose a LoRA file (.safetensors)"})
    size = getattr(upload, "size", None)
    if size is not None and size > MAX_LORA_UPLOAD_BYTES:
        raise Refusal({"file": f"is larger than {MAX_LORA_UPLOAD_BYTES // 2**20} MiB"}, status=413)
    data = upload.read(MAX_LORA_UPLOAD_BYTES + 1)
    if len(data) > MAX_LORA_UPLOAD_BYTES:
        raise Refusal({"file": f"is larger than {MAX_LORA_UPLOAD_BYTES // 2**20} MiB"}, status=413)
    return data


def resolve_base_model(value) -> DiffusionModel:
    if value in (None, ""):
        model = DiffusionModel.default()
        if model is None:
            raise Refusal({"base_model": "no model is installed"})
        return model
    model = DiffusionModel.objects.filter(slug=str(value), enabled=True).first()
    if model is None:
        raise Refusal({"base_model": f"unknown model {str(value)[:100]!r}"})
    return model


def upload_lora(owner, *, name, data: bytes, base_model: DiffusionModel, trigger_words: str = "",
                description: str = "", visibility: str = Lora.Visibility.PRIVATE) -> Lora:
    """Store a LoRA file (kohya or diffusers/PEFT keys) for ``base_model`` after checking that
    every layer fits it: a ``file`` refusal naming the first layer that does not, nothing stored."""
    from generation.diffusion.lora import LoraFileError, LoraMismatch, check_lora

    name = check_name(name)
    visibility = check_visibility(visibility)
    trigger_words = (trigger_words or "").strip()[:300]
    description = (description or "").strip()[:5000]
    for field, text in (("name", name), ("trigger_words", trigger_words), ("description", description)):
        if visibility != Lora.Visibility.PRIVATE and text:
            check_published_text(field, text)
    if Lora.objects.filter(owner=owner, name=name).exists():
        raise Refusal({"name": f"you already have a LoRA named {name!r}"})
    if len(data) > MAX_LORA_UPLOAD_BYTES:
        raise Refusal({"file": f"is larger than {MAX_LORA_UPLOAD_BYTES // 2**20} MiB"}, status=413)
    skeleton = model_skeleton_for(base_model)
    try:
        lora_file = check_lora(skeleton, data)
    except LoraMismatch as error:
        raise Refusal({"file": f"does not fit {base_model.name}: {error}"}) from None
    except LoraFileError as error:
        raise Refusal({"file": f"is not a LoRA this site reads: it {error}"}) from None
    except Exception as error:  # noqa: BLE001 - a file diffusers chokes on is the uploader's, never a 500
        raise Refusal({"file": f"could not be read as a LoRA ({type(error).__name__}: {str(error)[:200]})"}) from None
    stored = default_storage.save(lora_file_name(), ContentFile(data))
    try:
        with transaction.atomic():
            return Lora.objects.create(
                owner=owner, name=name, base_model=base_model, trigger_words=trigger_words,
                description=description, file=stored, file_hash=lora_file.hash, file_size=len(data),
                visibility=visibility, **_summary(lora_file))
    except IntegrityError:
        default_storage.delete(stored)
        raise Refusal({"name": f"you already have a LoRA named {name!r}"}) from None
    except BaseException:
        default_storage.delete(stored)
        raise


def update_lora(lora: Lora, *, name=None, trigger_words=None, description=None, visibility=None) -> Lora:
    changed = []
    if name is not None and name != lora.name:
        lora.name = check_name(name)
        if Lora.objects.filter(owner_id=lora.owner_id, name=lora.name).exclude(pk=lora.pk).exists():
            raise Refusal({"name": f"you already have a LoRA named {lora.name!r}"})
        changed.append("name")
    if trigger_words is not None:
        lora.trigger_words = str(trigger_words).strip()[:300]
        changed.append("trigger_words")
    if description is not None:
        lora.description = str(description).strip()[:5000]
        changed.append("description")
    if visibility is not None:
        lora.visibility = check_visibility(visibility)
        changed.append("visibility")
    if lora.visibility != Lora.Visibility.PRIVATE:
        for field in ("name", "trigger_words", "description"):
            if getattr(lora, field):
                check_published_text(field, getattr(lora, field))
    if changed:
        try:
            lora.save(update_fields=changed)
        except IntegrityError:
            raise Refusal({"name": f"you already have a LoRA named {lora.name!r}"}) from None
    return lora


def set_hidden(lora: Lora, hidden: bool, actor, reason: str = "", via=AuditEntry.Via.ADMIN) -> Lora:
    """Staff hide a LoRA (nobody else may see or use it; the owner still may) or show it again."""
    lora.hidden = bool(hidden)
    lora.hidden_reason = reason if hidden else ""
    lora.save(update_fields=["hidden", "hidden_reason"])
    AuditEntry.objects.record(AuditEntry.Action.HIDE_LORA if hidden else AuditEntry.Action.UNHIDE_LORA, actor=actor, via=via, target=lora,
                              subject=lora.owner, reason=reason)
    return lora


def kohya_bytes(lora: Lora) -> bytes:
    """The LoRA in kohya / A1111 keys (what A1111 and ComfyUI load), as safetensors bytes with
    its name, base model and trigger words in the metadata."""
    from generation.diffusion.lora import read_lora, save_lora, to_kohya

    with lora.file.open("rb") as handle:
        lora_file = read_lora(handle.read())
    metadata = {"ss_output_name": lora.name, "ss_base_model": lora.base_model.slug,
                "ss_tag_frequency": "{}", "ldmsite_trigger_words": lora.trigger_words}
    with tempfile.TemporaryDirectory() as directory:
        path = save_lora(to_kohya(lora_file), Path(directory) / "lora.safetensors", metadata)
        return path.read_bytes()


def search(loras, query: str):
    """LoRAs whose name, description or trigger words hold every word of ``query``."""
    for word in (query or "").split()[:10]:
        loras = loras.filter(Q(name__icontains=word) | Q(description__icontains=word) |
                             Q(trigger_words__icontains=word))
    return loras


def listing(user, query: str = "", model: str = ""):
    """The LoRAs page: your own and everyone's public ones (not hidden), newest first."""
    shared = Q(visibility=Lora.Visibility.PUBLIC, hidden=False)
    loras = Lora.objects.filter(shared | Q(owner=user)) if user.is_authenticated else Lora.objects.filter(shared)
    if model:
        loras = loras.filter(base_model__slug=model)
    return search(loras.select_related("owner", "base_model"), query)


def kohya_response(lora: Lora) -> HttpResponse:
    """The download: kohya-format safetensors as an attachment named after the LoRA."""
    response = HttpResponse(kohya_bytes(lora), content_type="application/octet-stream")
    response["Content-Disposition"] = f'attachment; filename="{lora.download_name}"'
    response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = "private, max-age=0"
    return response
