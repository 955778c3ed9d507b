"""LoRA adapters: read, check against a model, export in kohya (A1111) format, apply per job.

A LoRA file is a safetensors state dict in one of two key formats:

- kohya / A1111 (what A1111, ComfyUI and Civitai share): ``lora_unet_<module>.lora_down.weight``,
  ``.lora_up.weight`` and ``.alpha``, ``lora_te_`` (``lora_te1_``/``lora_te2_`` for SDXL) for the
  text encoder(s), module paths with ``_`` for ``.``;
- diffusers / PEFT: ``unet.<module>.lora_A.weight`` / ``.lora_B.weight`` (``text_encoder.`` ...),
  as ``pipeline.save_lora_weights`` writes it (its alpha in the file's ``lora_adapter_metadata``).

Both are read into one form with diffusers' own key conversions (:func:`lora_layers`) and loaded
by diffusers' own loader (``pipeline.load_lora_weights``) in kohya form (:func:`to_kohya`), which
carries each layer's alpha whichever format the file had (a diffusers file keeps its alpha in its
safetensors metadata, which diffusers reads from a file but not from a state dict); a diffusers
file applied this way gives plain diffusers' pixels (tested). :func:`check_lora` first reads every
layer the LoRA names off the model -- or off :func:`model_skeleton`, the model directory's modules
built on the meta device, where no model is loaded -- and refuses one
that does not fit with a :class:`LoraMismatch` (a ``ValueError``) naming the first missing module
or wrong shape -- never an error from inside peft. :func:`to_kohya` turns either format into the
kohya one for download; its alpha keeps the scale, so the round trip gives the same images.

A LoRA's identity is A1111's hash (:func:`lora_hash`): the sha256 of the safetensors file after
its header (kohya's ``addnet_hash_safetensors``), so editing the metadata keeps it; its first 12
hex digits are the ``Lora hashes`` of A1111's infotext.

Applying per job (:func:`use_loras`, which :func:`.engine.generate` enters when the request names
LoRAs): the adapters are loaded into the resident model's UNet and text encoder once and kept --
an LRU of at most ``MAX_LOADED_ADAPTERS`` per model, keyed by content hash, so the same file under
two names loads once -- and each job sets the ones it uses with its weights (``set_adapters``).
Adapters live on the shared modules, so jobs on one resident model run concurrently only when they
ask for the same adapters and weights: a plain job is one that asks for none (the adapters then
disabled, which is bit for bit the model without them). A job asking for another set waits until
the running ones finish, and while it waits no new job joins the running set (no starvation).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import threading
import warnings
import weakref
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import torch

from .hashing import file_sha256
from .request import UnsupportedRequest

logger = logging.getLogger(__name__)

MAX_LOADED_ADAPTERS = 8  # per resident model; least recently used ones are deleted beyond it
MAX_LORA_FILE_BYTES = 2 * 1024**3
LORA_HASH_DIGITS = 12  # A1111's "Lora hashes" short hash
KOHYA_PREFIXES = ("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_")
COMPONENTS = ("unet", "text_encoder", "text_encoder_2")
_METADATA_KEY = "lora_adapter_metadata"  # diffusers' save_lora_weights


class LoraMismatch(ValueError):
    """A LoRA that does not fit a model; ``layer`` is the first layer that does not fit (its
    module path in the model, e.g. ``unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q``)."""

    def __init__(self, layer: str | None, message: str):
        self.layer = layer
        super().__init__(message)


class LoraFileError(ValueError):
    """A file that is not a LoRA ldmsite reads (not safetensors, no LoRA keys, unreadable)."""


# ----------------------------------------------------------------------------------- reading

@dataclass(eq=False)
class LoraFile:
    """A LoRA read into memory: its tensors, its safetensors metadata and its A1111 hash."""

    state_dict: dict[str, torch.Tensor]
    hash: str  # sha256 of the tensors section (A1111 / kohya "addnet" hash)
    metadata: dict[str, str] = field(default_factory=dict)
    path: Path | None = None

    @property
    def short_hash(self) -> str:
        return self.hash[:LORA_HASH_DIGITS]

    @property
    def format(self) -> str:
        return lora_format(self.state_dict)


def addnet_hash(data: bytes) -> str:
    """kohya's / A1111's safetensors hash: sha256 of everything after the 8-byte header length
    and the JSON header (so metadata edits keep it)."""
    if len(data) < 8:
        raise LoraFileError("is not a safetensors file (too short)")
    header = struct.unpack("<Q", data[:8])[0]
    return hashlib.sha256(memoryview(data)[8 + header:]).hexdigest()


def lora_hash(source: "str | os.PathLike | bytes | Mapping[str, torch.Tensor]") -> str:
    """A1111's hash of a LoRA: a safetensors file (path or bytes; memoised by path, size and
    mtime) or a state dict (hashed as ``safetensors.torch.save`` writes it)."""
    if isinstance(source, (bytes, bytearray)):
        return addnet_hash(bytes(source))
    if isinstance(source, Mapping):
        from safetensors.torch import save

        return addnet_hash(save(_contiguous(source)))
    path = Path(source)
    with open(path, "rb") as handle:
        head = handle.read(8)
    if len(head) < 8:
        raise LoraFileError(f"{path.name} is not a safetensors file (too short)")
    return file_sha256(path, start=8 + struct.unpack("<Q", head)[0])


def _contiguous(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key: tensor.detach().contiguous() for key, tensor in state_dict.items()}


def read_lora(source: "str | os.PathLike | bytes | Mapping[str, torch.Tensor] | LoraFile") -> LoraFile:
    """A LoRA from a ``.safetensors`` path, its bytes, or a state dict (kept as given).
    ``LoraFileError`` for anything else: a pickle checkpoint (never unpickled), an unreadable
    file, or one without LoRA keys."""
    if isinstance(source, LoraFile):
        return source
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = None
    metadata: dict[str, str] = {}
    if isinstance(source, Mapping):
        state_dict = dict(source)
        digest = lora_hash(state_dict)
    else:
        if isinstance(source, (bytes, bytearray)):
            data = bytes(source)
        else:
            path = Path(source)
            if path.stat().st_size > MAX_LORA_FILE_BYTES:
                raise LoraFileError(f"{path.name} is larger than {MAX_LORA_FILE_BYTES // 2**30} GiB")
            data = path.read_bytes()
        try:
            state_dict = load(data)
            metadata = _safetensors_metadata(data)
        except (SafetensorError, ValueError, OSError, struct.error) as error:
            raise LoraFileError(f"is not a readable safetensors file ({str(error)[:200]}); LoRAs are read "
                                "from .safetensors files only") from error
        digest = addnet_hash(data)
    if not state_dict or not all(isinstance(value, torch.Tensor) for value in state_dict.values()):
        raise LoraFileError("holds no tensors")
    if not any("lora" in key for key in state_dict):
        raise LoraFileError("holds no LoRA weights (no key names lora_down/lora_up or lora_A/lora_B)")
    return LoraFile(state_dict=state_dict, hash=digest, metadata=metadata, path=path)


def _safetensors_metadata(data: bytes) -> dict[str, str]:
    header = struct.unpack("<Q", data[:8])[0]
    parsed = json.loads(data[8:8 + header].decode("utf-8"))
    meta = parsed.get("__metadata__") or {}
    return {str(key): str(value) for key, value in meta.items()}


def save_lora(state_dict: Mapping[str, torch.Tensor], path: "str | os.PathLike",
              metadata: Mapping[str, str] | None = None) -> Path:
    """Write a state dict as a safetensors file (contiguous tensors; ``metadata`` as strings)."""
    from safetensors.torch import save_file

    path = Path(path)
    save_file(_contiguous(state_dict), str(path), metadata={str(k): str(v) for k, v in (metadata or {}).items()})
    return path


def lora_format(state_dict: Mapping[str, Any]) -> str:
    """``"kohya"`` (lora_unet_/lora_te_ keys) or ``"diffusers"`` (anything else diffusers reads)."""
    return "kohya" if all(key.startswith(KOHYA_PREFIXES) for key in state_dict) else "diffusers"


# -------------------------------------------------------------------------- normalising keys

@dataclass
class _Layer:
    """One adapted module: its LoRA down/up (A/B) weights and alpha (None: alpha = rank)."""

    down: torch.Tensor | None = None
    up: torch.Tensor | None = None
    alpha: float | None = None


def _diffusers_keys(pipeline_class, lora: LoraFile, unet_config=None) -> tuple[dict, dict]:
    """(diffusers-format state dict, network alphas) as diffusers' loader sees them."""
    state_dict = dict(lora.state_dict)
    if lora.format != "kohya" and not any(key.startswith(tuple(f"{c}." for c in COMPONENTS)) for key in state_dict):
        state_dict = {f"unet.{key}": value for key, value in state_dict.items()}  # a bare UNet adapter
    kwargs = {}
    if unet_config is not None and any(marker in key for key in state_dict
                                       for marker in ("input_blocks", "middle_block", "output_blocks")):
        kwargs["unet_config"] = unet_config  # original (LDM) block names: diffusers maps them by the config
    try:
        converted, alphas = pipeline_class.lora_state_dict(state_dict, **kwargs)
    except (ValueError, KeyError, IndexError) as error:
        raise LoraFileError(f"has keys diffusers cannot read as a LoRA ({str(error).strip()[:300]})") from error
    return converted, dict(alphas or {})


def _metadata_alphas(lora: LoraFile) -> dict[str, dict]:
    """diffusers' ``lora_adapter_metadata``: per component prefix, its LoraConfig fields."""
    raw = lora.metadata.get(_METADATA_KEY)
    if not raw:
        return {}
    try:
        flat = json.loads(raw)
    except ValueError:
        return {}
    configs: dict[str, dict] = {}
    for key, value in flat.items():
        prefix, _, name = key.partition(".")
        if prefix in COMPONENTS:
            configs.setdefault(prefix, {})[name] = value
    return configs


def lora_layers(lora: LoraFile, pipeline_class=None, unet_config=None) -> dict[str, dict[str, _Layer]]:
    """The LoRA's layers per component (``unet``, ``text_encoder``, ``text_encoder_2``): module
    path in that component -> down/up weights and alpha, whatever the file's key format."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils.state_dict_utils import (StateDictType, convert_state_dict_to_diffusers,
                                                  convert_state_dict_to_peft, convert_unet_state_dict_to_peft)

    converted, alphas = _diffusers_keys(pipeline_class or StableDiffusionPipeline, lora, unet_config)
    configs = _metadata_alphas(lora)
    layers: dict[str, dict[str, _Layer]] = {}
    for component in COMPONENTS:
        prefix = f"{component}."
        part = {key[len(prefix):]: value for key, value in converted.items() if key.startswith(prefix)}
        part_alphas = {key[len(prefix):]: value for key, value in alphas.items() if key.startswith(prefix)}
        if not part:
            continue
        if component == "unet":
            part = convert_unet_state_dict_to_peft(part)
            part_alphas = {_module_of(convert_unet_state_dict_to_peft({k.removesuffix(".alpha"): 0}).popitem()[0]):
                           v for k, v in part_alphas.items()}
        else:
            old = any(f"{name}_lora." in key for key in part for name in ("to_q", "to_k", "to_v", "to_out"))
            if old or any("lora_linear_layer" in key for key in part):
                def to_peft(keys: dict) -> dict:
                    if old:
                        keys = convert_state_dict_to_diffusers(keys, original_type=StateDictType.DIFFUSERS_OLD)
                    return convert_state_dict_to_peft(keys, original_type=StateDictType.DIFFUSERS)

                part = to_peft(part)
                part_alphas = {_module_of(to_peft({k.removesuffix(".alpha"): 0}).popitem()[0]): v
                               for k, v in part_alphas.items()}
            else:
                part_alphas = {_module_of(k.removesuffix(".alpha")): v for k, v in part_alphas.items()}
        config = configs.get(component, {})
        found: dict[str, _Layer] = {}
        for key, tensor in part.items():
            module = _module_of(key)
            layer = found.setdefault(module, _Layer())
            if ".lora_A." in key or key.endswith(".lora_A.weight"):
                layer.down = tensor
            elif ".lora_B." in key or key.endswith(".lora_B.weight"):
                layer.up = tensor
            else:
                raise LoraFileError(f"has a key that is not a LoRA down/up weight: {prefix}{key}")
        for module, layer in found.items():
            if module in part_alphas:
                layer.alpha = float(part_alphas[module])
            elif config:
                pattern = config.get("alpha_pattern") or {}
                layer.alpha = float(next((v for k, v in pattern.items() if module.endswith(k)),
                                         config.get("lora_alpha", layer.down.shape[0] if layer.down is not None else 1)))
        layers[component] = found
    return layers


def _module_of(key: str) -> str:
    """``a.b.to_q.lora_A.weight`` -> ``a.b.to_q`` (also for ``.lora_B`` / ``.lora.down`` spellings)."""
    for marker in (".lora_A", ".lora_B", ".lora.down", ".lora.up", ".lora_linear_layer", ".lora_magnitude_vector"):
        index = key.find(marker)
        if index >= 0:
            return key[:index]
    return key  # an alpha's key: already the module's path


# ------------------------------------------------------------------------------------ checking

def check_lora(model, source) -> LoraFile:
    """Refuse a LoRA that does not fit ``model`` (a :class:`~.loading.LoadedModel` or a diffusers
    pipeline): :class:`LoraMismatch` naming the first layer that is missing from the model or has
    another shape, :class:`LoraFileError` for a file that is no LoRA. Returns the read LoRA."""
    pipeline = getattr(model, "pipeline", model)
    lora = read_lora(source)
    layers = lora_layers(lora, _pipeline_class(pipeline), pipeline.unet.config)
    if not layers:
        raise LoraFileError("holds no LoRA layers for a UNet or text encoder")
    for component, found in layers.items():
        target = getattr(pipeline, component, None)
        if target is None:
            first = next(iter(found))
            raise LoraMismatch(f"{component}.{first}", (
                f"this LoRA adapts {component}.{first}, but the model has no {component} (a LoRA for another kind "
                "of base model)"))
        for module_path, layer in found.items():
            where = f"{component}.{module_path}"
            try:
                module = target.get_submodule(module_path)
            except AttributeError:
                raise LoraMismatch(where, f"layer {where} of this LoRA is not in the model (a LoRA for another "
                                          "base model)") from None
            module = getattr(module, "base_layer", module)  # already wrapped by peft
            if layer.down is None or layer.up is None:
                raise LoraMismatch(where, f"layer {where} of this LoRA has only one of its two weights (down/up)")
            _check_shapes(where, module, layer.down, layer.up)
    return lora


def _pipeline_class(pipeline):
    """The diffusers pipeline class whose LoRA loader reads keys for ``pipeline`` (a pipeline, or
    a :func:`model_skeleton`)."""
    if hasattr(type(pipeline), "lora_state_dict"):
        return type(pipeline)
    import diffusers

    two = getattr(pipeline, "text_encoder_2", None) is not None
    return diffusers.StableDiffusionXLPipeline if two else diffusers.StableDiffusionPipeline


def model_skeleton(directory: "str | os.PathLike"):
    """A diffusers model directory's UNet and text encoder(s) built from their configs on the meta
    device: every layer's name and shape, no weights read, no memory -- enough for
    :func:`check_lora` where the model is not loaded (the web process checking an upload)."""
    from types import SimpleNamespace

    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    root = Path(directory)
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(root / "unet"))
        encoders = {}
        for name, cls in (("text_encoder", CLIPTextModel), ("text_encoder_2", CLIPTextModelWithProjection)):
            if (root / name / "config.json").is_file():
                encoders[name] = cls(CLIPTextConfig.from_pretrained(root / name))
    return SimpleNamespace(unet=unet, text_encoder=encoders.get("text_encoder"),
                           text_encoder_2=encoders.get("text_encoder_2"))


def _check_shapes(where: str, module, down: torch.Tensor, up: torch.Tensor) -> None:
    rank = down.shape[0] if down.dim() else 0
    if isinstance(module, torch.nn.Linear):
        expected_down, expected_up = (rank, module.in_features), (module.out_features, rank)
    elif isinstance(module, torch.nn.Conv2d):
        kernel = tuple(module.kernel_size)
        expected_down = (rank, module.in_channels, *kernel)
        expected_up = (module.out_channels, rank, 1, 1)
        if down.dim() == 2:  # a conv LoRA stored flat
            expected_down, expected_up = (rank, module.in_channels), (module.out_channels, rank)
    else:
        raise LoraMismatch(where, f"layer {where} is a {type(module).__name__} in the model; a LoRA adapts "
                                  "linear and convolution layers only")
    if tuple(down.shape) != expected_down or tuple(up.shape) != expected_up:
        raise LoraMismatch(where, (
            f"layer {where} does not fit: the model's layer takes {_shape(expected_down)} (down) and "
            f"{_shape(expected_up)} (up) at this rank, the LoRA has {_shape(down.shape)} and {_shape(up.shape)} "
            "(a LoRA for another base model)"))


def _shape(shape) -> str:
    return "x".join(str(int(n)) for n in shape)


# ------------------------------------------------------------------------------------ export

def to_kohya(source, *, pipeline_class=None, unet_config=None) -> dict[str, torch.Tensor]:
    """The LoRA in kohya / A1111 key format (what A1111 and ComfyUI load): per layer
    ``lora_unet_<path>.lora_down.weight``, ``.lora_up.weight`` and ``.alpha`` (the alpha that
    gives the same scale: rank when the source stated none), ``lora_te_`` for an SD text encoder
    (``lora_te1_``/``lora_te2_`` when there are two). A kohya file comes back with the same layers,
    weights and alphas."""
    lora = read_lora(source)
    layers = lora_layers(lora, pipeline_class, unet_config)
    two_encoders = "text_encoder_2" in layers
    prefixes = {"unet": "lora_unet_", "text_encoder": "lora_te1_" if two_encoders else "lora_te_",
                "text_encoder_2": "lora_te2_"}
    out: dict[str, torch.Tensor] = {}
    for component, found in layers.items():
        for module_path, layer in sorted(found.items()):
            if layer.down is None or layer.up is None:
                raise LoraFileError(f"layer {component}.{module_path} has only one of its two weights")
            key = prefixes[component] + module_path.replace(".", "_")
            out[f"{key}.lora_down.weight"] = layer.down.detach().clone().contiguous()
            out[f"{key}.lora_up.weight"] = layer.up.detach().clone().contiguous()
            alpha = layer.alpha if layer.alpha is not None else float(layer.down.shape[0])
            out[f"{key}.alpha"] = torch.tensor(alpha, dtype=torch.float32)
    return out


# ------------------------------------------------------------------------- applying per job

@dataclass(frozen=True)
class AppliedLora:
    """A LoRA a job ran with: what the metadata and the PNG record."""

    name: str
    weight: float
    hash: str

    @property
    def short_hash(self) -> str:
        return self.hash[:LORA_HASH_DIGITS]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "weight": self.weight, "hash": self.hash}


def _adapter_name(digest: str) -> str:
    return f"lora_{digest[:16]}"  # peft adapter names become module keys: no dots


class _AdapterState:
    """The adapters loaded into one resident model, and who is using which."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.condition = threading.Condition()
        self.loaded: "OrderedDict[str, str]" = OrderedDict()  # content hash -> adapter name, LRU first
        self.active: tuple[tuple[str, float], ...] = ()  # (adapter name, weight) set on the model
        self.users = 0  # jobs running with ``active``
        self.waiting = 0  # jobs waiting for another set
        self.loads = 0
        self.swaps = 0


_STATES: "weakref.WeakKeyDictionary[Any, _AdapterState]" = weakref.WeakKeyDictionary()
_STATES_LOCK = threading.Lock()


def adapter_state(model, capacity: int = MAX_LOADED_ADAPTERS) -> _AdapterState:
    """The adapter bookkeeping of a resident model (made on first use, dropped with the model)."""
    with _STATES_LOCK:
        state = _STATES.get(model)
        if state is None:
            state = _STATES[model] = _AdapterState(capacity)
        return state


def loaded_adapters(model) -> list[str]:
    """Content hashes of the LoRAs loaded into ``model``, least recently used first."""
    with _STATES_LOCK:
        state = _STATES.get(model)
    return list(state.loaded) if state is not None else []


def _source_hash(source) -> str:
    """A LoRA source's A1111 hash without reading it into tensors (a path's is memoised)."""
    if isinstance(source, LoraFile):
        return source.hash
    return lora_hash(source)


@contextmanager
def use_loras(model, loras: Sequence[tuple[Any, ...]]) -> Iterator[list[AppliedLora]]:
    """Run the block with ``loras`` -- ``(name, LoRA source, weight)`` or ``(source, weight)`` --
    set on ``model`` (a :class:`~.loading.LoadedModel`), and with no adapter active when the list
    is empty. A source is a ``.safetensors`` path, its bytes, a state dict or a :class:`LoraFile`;
    a file already loaded into the model is not read again (its hash is memoised). Yields what
    was applied (name, weight, hash). Blocks while jobs with another set run on the model, and
    while a job waits for another set no new job joins the running ones (see the module's
    docstring)."""
    wanted: list[tuple[str, Any, str, float]] = []
    for item in loras:
        name, source, weight = item if len(item) == 3 else (None, *item)
        digest = _source_hash(source)
        wanted.append((name or digest[:LORA_HASH_DIGITS], source, digest, float(weight)))
    pipeline = model.pipeline
    state = adapter_state(model)
    merged: dict[str, float] = {}
    for _, _, digest, weight in wanted:  # the same file under two names: one adapter, weights added
        merged[_adapter_name(digest)] = merged.get(_adapter_name(digest), 0.0) + weight
    config = tuple(sorted(merged.items()))
    with state.condition:  # plain jobs register too: a LoRA job must not load under their feet
        pending = False
        while state.users and not (state.active == config and not state.waiting):
            if state.active != config and not pending:
                state.waiting += 1  # from now on nobody joins the running set
                pending = True
            state.condition.wait()
        if pending:
            state.waiting -= 1
        if state.active != config:
            try:
                _switch(model, pipeline, state, wanted, config)
            except BaseException:
                state.condition.notify_all()
                raise
        state.users += 1
    try:
        yield [AppliedLora(name, weight, digest) for name, _, digest, weight in wanted]
    finally:
        with state.condition:
            state.users -= 1
            state.condition.notify_all()


def _switch(model, pipeline, state: _AdapterState, wanted, config) -> None:
    """Load what is missing (evicting the least recently used beyond capacity) and set ``config``.
    Called with no job running on the model. Until it succeeds the model's adapter settings are
    unknown (``active`` None), so the next job sets them again whatever it asks for."""
    state.active = None
    keep = {_adapter_name(digest) for _, _, digest, _ in wanted}
    for name, source, digest, _ in wanted:
        if digest in state.loaded:
            state.loaded.move_to_end(digest)
            continue
        try:
            lora = check_lora(model, source)
        except (LoraMismatch, LoraFileError) as error:  # for the person who asked, as the request's other refusals
            raise UnsupportedRequest(f"loras: LoRA {name!r} cannot be used with model "
                                     f"{getattr(model, 'name', 'this model')}: {error}") from error
        _evict(pipeline, state, keep=keep)
        try:
            _load_adapter(model, pipeline, lora)
        except BaseException:
            _forget(pipeline, _adapter_name(digest))  # whatever part of it was injected
            raise
        state.loaded[digest] = _adapter_name(digest)
        state.loads += 1
    if config:
        pipeline.enable_lora()
        pipeline.set_adapters([name for name, _ in config], [weight for _, weight in config])
    else:
        pipeline.disable_lora()
    state.active = config
    state.swaps += 1


def _evict(pipeline, state: _AdapterState, keep: set[str]) -> None:
    while len(state.loaded) >= state.capacity:
        victim = next((digest for digest, name in state.loaded.items() if name not in keep), None)
        if victim is None:
            return
        pipeline.delete_adapters(state.loaded.pop(victim))


def _forget(pipeline, adapter: str) -> None:
    try:
        pipeline.delete_adapters(adapter)
    except Exception:  # noqa: BLE001 - not (fully) loaded: nothing to delete where it is missing
        logger.debug("adapter %s was not loaded", adapter)


def _load_adapter(model, pipeline, lora: LoraFile) -> None:
    """diffusers' ``load_lora_weights`` with the LoRA in kohya form (:func:`to_kohya`): one path
    for both key formats, with each layer's alpha -- a diffusers file's alpha lives in its
    safetensors metadata, which diffusers reads from a file but not from a state dict."""
    import diffusers
    import transformers

    try:
        import peft  # noqa: F401 - diffusers' LoRA loading needs its PEFT backend
    except ImportError:
        raise RuntimeError("Applying a LoRA needs the peft package on this worker (pip install -r "
                           "requirements.txt)") from None
    dtype = getattr(model, "dtype", None) or pipeline.unet.dtype
    state_dict = {key: value.to(dtype=dtype) if not key.endswith(".alpha") else value
                  for key, value in to_kohya(lora, pipeline_class=type(pipeline),
                                                           unet_config=pipeline.unet.config).items()}
    verbosity = transformers.utils.logging.get_verbosity()
    diffusers_verbosity = diffusers.utils.logging.get_verbosity()
    transformers.utils.logging.set_verbosity_error()  # peft's load report of the text encoder
    diffusers.utils.logging.set_verbosity_error()  # "no LoRA keys for the text encoder": a UNet-only LoRA
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Already found a `peft_config`")  # a second adapter: meant
            pipeline.load_lora_weights(state_dict, adapter_name=_adapter_name(lora.hash))
    finally:
        transformers.utils.logging.set_verbosity(verbosity)
        diffusers.utils.logging.set_verbosity(diffusers_verbosity)


def resolve_loras(request_loras: Sequence[tuple[str, float]], files: Mapping[str, Any] | None) -> list[tuple]:
    """``(name, source, weight)`` for each of a request's (name, weight) pairs, the source taken
    from ``files`` (name -> path, bytes, state dict or :class:`LoraFile`); an
    :class:`~.request.UnsupportedRequest` naming ``loras`` for a name without one."""
    files = files or {}
    missing = [name for name, _ in request_loras if name not in files]
    if missing:
        raise UnsupportedRequest(f"loras: no LoRA file was given for {', '.join(repr(n) for n in missing)}")
    return [(name, files[name], weight) for name, weight in request_loras]


def lora_hashes_text(applied: Sequence[AppliedLora]) -> str:
    """A1111's ``Lora hashes`` value: ``name: shorthash, name2: shorthash2``."""
    return ", ".join(f"{item.name.replace(':', '').replace(',', '')}: {item.short_hash}" for item in applied)


__all__ = ["LoraFile", "LoraMismatch", "LoraFileError", "AppliedLora", "read_lora", "save_lora", "lora_hash",
           "addnet_hash", "lora_format", "lora_layers", "check_lora", "to_kohya", "use_loras", "resolve_loras",
           "loaded_adapters", "adapter_state", "model_skeleton", "lora_hashes_text", "MAX_LOADED_ADAPTERS", "LORA_HASH_DIGITS"]
