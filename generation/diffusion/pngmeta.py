"""PNG metadata: AUTOMATIC1111's ``parameters`` text chunk plus our full JSON record.

Every PNG we write carries two text chunks:

- ``parameters``: the A1111 "infotext" (prompt, ``Negative prompt: ...``, then
  ``Steps: 25, Sampler: DPM++ 2M, CFG scale: 7, Seed: 1, Size: 512x512, Model hash: ..., Model: ...``),
  so A1111, ComfyUI, Civitai and other tools read our images;
- ``ldmsite``: the JSON metadata of :func:`generation.diffusion.generate` (request fields, seed,
  model hash, scheduler config, library versions, device/dtype, timings).

:func:`read_png_parameters` reads either (ours first) back into request fields. The infotext
format follows A1111's ``modules/infotext_utils.py`` (``quote`` / ``parse_generation_parameters``).
No torch here.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import IO, Any, Mapping

from PIL import Image, PngImagePlugin

from .request import REQUEST_FIELDS
from .samplers import SAMPLERS, resolve_sampler

JSON_CHUNK = "ldmsite"
PARAMETERS_CHUNK = "parameters"

# A1111's infotext grammar: "Key: value" pairs, values quoted JSON-style when they hold , : or \n.
_RE_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_RE_SIZE = re.compile(r"^(\d+)x(\d+)$")


def _quote(text: Any) -> str:
    text = str(text)
    if "," not in text and "\n" not in text and ":" not in text and '"' not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


def _num(value: float) -> str:
    return f"{value:g}"


def format_parameters(fields: Mapping[str, Any], *, seed: int | None = None, model_name: str | None = None,
                      model_hash: str | None = None, extra: Mapping[str, Any] | None = None) -> str:
    """The A1111 ``parameters`` string for one image (``seed`` is that image's own seed)."""
    lines = [str(fields["prompt"])]
    if fields.get("negative_prompt"):
        lines.append(f"Negative prompt: {fields['negative_prompt']}")
    pairs: list[tuple[str, Any]] = [
        ("Steps", fields["steps"]),
        ("Sampler", fields["sampler"]),
        ("CFG scale", _num(float(fields["guidance_scale"]))),
        ("Seed", fields["seed"] if seed is None else seed),
        ("Size", f"{fields['width']}x{fields['height']}"),
    ]
    if model_hash:
        pairs.append(("Model hash", model_hash))
    if model_name:
        pairs.append(("Model", model_name))
    sampler = SAMPLERS.get(str(fields["sampler"]))
    if sampler is not None and sampler.uses_eta and float(fields.get("eta") or 0):
        pairs.append(("Eta DDIM", _num(float(fields["eta"]))))
    if float(fields.get("autoguidance_scale") or 0) > 0:
        pairs.append(("Autoguidance scale", _num(float(fields["autoguidance_scale"]))))
    if float(fields.get("clip_guidance_scale") or 0) > 0:
        pairs += [
            ("CLIP guidance scale", _num(float(fields["clip_guidance_scale"]))),
            ("CLIP cutouts", fields["clip_cutouts"]),
            ("CLIP guidance every", fields["clip_guidance_every"]),
            ("CLIP guidance window",
             f"{_num(float(fields['clip_guidance_start']))}-{_num(float(fields['clip_guidance_end']))}"),
        ]
    for key, value in (extra or {}).items():
        if value is not None:
            pairs.append((key, value))
    lines.append(", ".join(f"{key}: {_quote(value)}" for key, value in pairs))
    return "\n".join(lines)


def parse_parameters(text: str) -> tuple[dict[str, Any], dict[str, str]]:
    """Parse an A1111 infotext into (request fields, other key/values).

    Request fields use our names (``guidance_scale``, ``width``...). A sampler we know is
    returned by its canonical name; one we do not is returned as written, for the caller to
    report. ``Schedule type: Karras`` (A1111 >= 1.9) is folded into the sampler name.
    """
    lines = text.strip().split("\n")
    last = lines[-1] if lines else ""
    if len(_RE_PARAM.findall(last)) >= 3:
        lines = lines[:-1]
    else:
        last = ""
    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    in_negative = False
    for line in lines:
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:"):].strip()
        (negative_lines if in_negative else prompt_lines).append(line)
    fields: dict[str, Any] = {"prompt": "\n".join(prompt_lines).strip()}
    if negative_lines:
        fields["negative_prompt"] = "\n".join(negative_lines).strip()

    raw: dict[str, str] = {}
    for key, value in _RE_PARAM.findall(last):
        raw[key.strip()] = _unquote(value.strip())

    extras: dict[str, str] = {}
    sampler = raw.pop("Sampler", None)
    schedule = raw.pop("Schedule type", None)
    if sampler is not None:
        name = sampler
        if schedule and schedule.lower() not in ("automatic", "uniform") and schedule.lower() not in name.lower():
            name = f"{sampler} {schedule}"
        try:
            fields["sampler"] = resolve_sampler(name)
        except KeyError:
            try:
                fields["sampler"] = resolve_sampler(sampler)
                extras["Schedule type"] = schedule or ""
            except KeyError:
                fields["sampler"] = name
    simple = {"Steps": ("steps", int), "CFG scale": ("guidance_scale", float), "Seed": ("seed", int),
              "Eta DDIM": ("eta", float), "Eta": ("eta", float), "Autoguidance scale": ("autoguidance_scale", float),
              "CLIP guidance scale": ("clip_guidance_scale", float), "CLIP cutouts": ("clip_cutouts", int),
              "CLIP guidance every": ("clip_guidance_every", int)}
    for key, value in raw.items():
        try:
            if key in simple:
                name, kind = simple[key]
                fields.setdefault(name, kind(float(value)) if kind is int else kind(value))
            elif key == "Size" and _RE_SIZE.match(value):
                width, height = _RE_SIZE.match(value).groups()
                fields["width"], fields["height"] = int(width), int(height)
            elif key == "CLIP guidance window" and "-" in value:
                start, end = value.split("-", 1)
                fields["clip_guidance_start"], fields["clip_guidance_end"] = float(start), float(end)
            else:
                extras[key] = value
        except ValueError:
            extras[key] = value
    return fields, extras


def write_png(image: Image.Image, metadata: Mapping[str, Any], parameters: str, path_or_file: str | Path | IO[bytes]) -> None:
    """Save ``image`` as PNG with the ``parameters`` and ``ldmsite`` (JSON) text chunks."""
    info = PngImagePlugin.PngInfo()
    info.add_text(PARAMETERS_CHUNK, parameters)  # tEXt, or iTXt when not Latin-1 (PIL decides)
    info.add_text(JSON_CHUNK, json.dumps(metadata, ensure_ascii=True, sort_keys=True, default=str))
    image.save(path_or_file, format="PNG", pnginfo=info)


def _open(file: str | Path | IO[bytes] | bytes) -> Image.Image:
    if isinstance(file, bytes):
        file = io.BytesIO(file)
    image = Image.open(file)
    image.load()  # text chunks after the image data are read only then
    return image


def read_png_metadata(file: str | Path | IO[bytes] | bytes) -> dict[str, Any]:
    """Everything we can read: ``fields`` (request fields), ``metadata`` (our JSON or None),
    ``parameters`` (the infotext or None) and ``extra`` (infotext keys that are not fields)."""
    image = _open(file)
    text = dict(getattr(image, "text", {}) or {})
    parameters = text.get(PARAMETERS_CHUNK) or image.info.get(PARAMETERS_CHUNK)
    metadata = None
    raw_json = text.get(JSON_CHUNK) or image.info.get(JSON_CHUNK)
    if raw_json:
        try:
            metadata = json.loads(raw_json)
        except ValueError:
            metadata = None
    fields: dict[str, Any] = {}
    extra: dict[str, str] = {}
    if parameters:
        fields, extra = parse_parameters(parameters)
    if isinstance(metadata, dict):
        fields = {name: metadata[name] for name in REQUEST_FIELDS if name in metadata}
    if fields:
        fields["num_images"] = 1  # the seed read back is this image's own seed
        # A PNG that does not say it was autoguided was made without it (A1111's, and ldmsite's
        # before autoguidance existed); the model's default might have it on.
        fields.setdefault("autoguidance_scale", 0.0)
    return {"fields": fields, "metadata": metadata, "parameters": parameters, "extra": extra}


def read_png_parameters(file: str | Path | IO[bytes] | bytes) -> dict[str, Any]:
    """Request fields from one of our PNGs or an A1111 PNG, ready for ``validate_request``.

    ``seed`` is the image's own seed and ``num_images`` is 1, so validating and generating the
    result reproduces that image. An empty dict means the PNG has no generation parameters.
    """
    return read_png_metadata(file)["fields"]
