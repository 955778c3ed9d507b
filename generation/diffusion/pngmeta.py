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

Both readers see client input (PNG import, A1111's png-info), so both are linear and bounded: the
infotext is parsed by a hand-written scanner, not A1111's regex (whose search restarts at every
character of a long line: 28 s for 40,000 characters), and a PNG is read chunk by chunk without
decoding its pixels -- the header's size is checked against ``MAX_PNG_PIXELS`` and a text chunk
longer than ``MAX_TEXT_CHARS`` is refused.
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from pathlib import Path
from typing import IO, Any, Mapping

from PIL import Image, PngImagePlugin

from .request import (INPAINTING_FILLS, MAX_LORA_NAME_CHARS, MAX_LORAS, MAX_NUMBER_MAGNITUDE, REQUEST_FIELDS,
                      RESIZE_MODES, SOURCE_MODES, _lora_pairs, prompt_with_lora_tags, real_number, whole_number)
from .samplers import SAMPLERS, resolve_sampler

JSON_CHUNK = "ldmsite"
PARAMETERS_CHUNK = "parameters"

MAX_TEXT_CHARS = 64 * 1024  # one text chunk we read (ours are a few KB; A1111's too, long prompts included)
MAX_PNG_PIXELS = 8192 * 8192  # a PNG whose header says more is refused before anything else is read
MAX_PNG_CHUNKS = 100_000  # a 20 MB PNG in 8 KB IDAT chunks (libpng's) has ~2,500


class PngMetadataError(OSError):
    """A file whose metadata is not read: not a PNG, too large, or a text chunk too long. The
    message completes "The file ..." (an ``OSError``, as Pillow's errors for unreadable files)."""


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
    """The A1111 ``parameters`` string for one image (``seed`` is that image's own seed). The
    request's LoRAs are written as A1111 keeps them: ``<lora:name:weight>`` tags in the prompt
    (appended), which the request validator takes out again; their hashes (``Lora hashes``) come
    with ``extra`` from the engine."""
    lines = [prompt_with_lora_tags(str(fields["prompt"]), _lora_pairs(fields.get("loras")))]
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
    pairs += _image_to_image_pairs(fields)
    for key, value in (extra or {}).items():
        if value is not None:
            pairs.append((key, value))
    lines.append(", ".join(f"{key}: {_quote(value)}" for key, value in pairs))
    return "\n".join(lines)


OUTPAINT_KEYS = {"Outpaint left": "outpaint_left", "Outpaint right": "outpaint_right", "Outpaint top": "outpaint_top",
                 "Outpaint bottom": "outpaint_bottom"}  # ldmsite's own (A1111's outpainting scripts write none)
MASK_KEYS = ("Mask blur", "Mask mode", "Masked content", "Inpaint area", "Masked area padding")
HIRES_KEYS = ("Hires upscale", "Hires resize", "Hires steps", "Hires upscaler", "Hires prompt", "Hires negative prompt",
              "Hires sampler")


def _image_to_image_pairs(fields: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """A1111's infotext keys for img2img, inpainting (``modules/processing.py``:
    ``StableDiffusionProcessingImg2Img.init``) and the hires fix (``StableDiffusionProcessingTxt2Img``).
    Where A1111 leaves a key out at its default but ours may differ (``Mask blur: 0``, ``Hires
    upscale`` beside ``Hires resize``, a hires sampler equal to the sampler), it is written, so the
    infotext alone gives the request back."""
    pairs: list[tuple[str, Any]] = []
    mode = fields.get("mode") or "txt2img"
    if mode in SOURCE_MODES:
        pairs.append(("Denoising strength", _num(float(fields.get("denoising_strength", 0.75)))))
        resize_mode = int(fields.get("resize_mode") or 0)
        if resize_mode:
            pairs.append(("Resize mode", RESIZE_MODES.get(resize_mode, resize_mode)))
        if mode in ("inpaint", "outpaint"):
            pairs.append(("Mask blur", int(fields.get("mask_blur", 4))))
            if fields.get("inpainting_mask_invert"):
                pairs.append(("Mask mode", "Inpaint not masked"))
            fill = int(fields.get("inpainting_fill", 1))
            if fill != 1:
                pairs.append(("Masked content", INPAINTING_FILLS.get(fill, fill)))
            if fields.get("inpaint_full_res"):
                pairs += [("Inpaint area", "Only masked"),
                          ("Masked area padding", int(fields.get("inpaint_full_res_padding", 32)))]
        if mode == "outpaint":
            pairs += [(key, int(fields.get(name) or 0)) for key, name in OUTPAINT_KEYS.items() if fields.get(name)]
    elif fields.get("enable_hr"):
        pairs += [("Denoising strength", _num(float(fields.get("hr_denoising_strength", 0.7)))),
                  ("Hires upscale", _num(float(fields.get("hr_scale", 2.0))))]
        resize_x, resize_y = int(fields.get("hr_resize_x") or 0), int(fields.get("hr_resize_y") or 0)
        if resize_x or resize_y:
            pairs.append(("Hires resize", f"{resize_x}x{resize_y}"))
        if fields.get("hr_second_pass_steps"):
            pairs.append(("Hires steps", int(fields["hr_second_pass_steps"])))
        pairs.append(("Hires upscaler", fields.get("hr_upscaler") or "Latent"))
        for key, name in (("Hires prompt", "hr_prompt"), ("Hires negative prompt", "hr_negative_prompt"),
                          ("Hires sampler", "hr_sampler_name")):
            if fields.get(name):
                pairs.append((key, fields[name]))
    return pairs


def _sampler_name(sampler: str, schedule: str | None) -> tuple[str, bool]:
    """(canonical or as-written name, whether the schedule type was left over) for A1111's
    ``Sampler`` + ``Schedule type`` pair (A1111 >= 1.9 splits "DPM++ 2M Karras" in two)."""
    name = sampler
    if schedule and schedule.lower() not in ("automatic", "uniform") and schedule.lower() not in name.lower():
        name = f"{sampler} {schedule}"
    try:
        return resolve_sampler(name), False
    except KeyError:
        try:
            return resolve_sampler(sampler), True
        except KeyError:
            return name, False


# A1111's infotext grammar: "Key: value" pairs, values quoted JSON-style when they hold , : or \n.
# A1111 reads them with re.findall(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)', line),
# which is quadratic: on a line with no colon, the search restarts at every character and runs to
# the end of the word each time. `_find_params` gives exactly what that findall gives (the security
# suite checks it against the regex), in one pass: a start that fails at position k fails for every
# start before k too, so the scan resumes at k.
_KEY_PUNCTUATION = frozenset(" -/")


def _is_word(character: str) -> bool:
    return character.isalnum() or character == "_"  # re's \w on str


def _is_key(character: str) -> bool:
    return character in _KEY_PUNCTUATION or character.isalnum() or character == "_"


def _quoted_end(line: str, start: int) -> int:
    """Just past the closing quote of the JSON-style quoted value opening at ``start``, or -1 when
    A1111's pattern would not take it as quoted (unterminated, empty, or not followed by a comma
    or the end of the line)."""
    n = len(line)
    i = start + 1
    while i < n:
        character = line[i]
        if character == "\\":
            if i + 1 >= n or line[i + 1] == "\n":
                return -1
            i += 2
        elif character == '"':
            break
        else:
            i += 1
    if i >= n or i == start + 1:
        return -1
    after = i + 1
    if after == n or line[after] == "," or (after == n - 1 and line[after] == "\n"):
        return after
    return -1


def _find_params(line: str) -> list[tuple[str, str]]:
    """The (key, value) pairs of an infotext's last line, as A1111's findall finds them; linear."""
    pairs: list[tuple[str, str]] = []
    n = len(line)
    position = 0
    while position < n:
        j = position
        while j < n and line[j].isspace():
            j += 1
        if j >= n or not _is_word(line[j]):
            position = j + 1
            continue
        k = j + 1
        while k < n and _is_key(line[k]):
            k += 1
        if k == j + 1 or k >= n or line[k] != ":":
            position = k  # every start from here to k fails the same way
            continue
        v = k + 1
        while v < n and line[v].isspace():
            v += 1
        quoted = _quoted_end(line, v) if v < n and line[v] == '"' else -1
        if quoted >= 0:
            value, end = line[v:quoted], quoted + 1 if quoted < n and line[quoted] == "," else quoted
        else:
            comma = line.find(",", v)
            value, end = (line[v:], n) if comma < 0 else (line[v:comma], comma + 1)
        pairs.append((line[j:k], value))
        position = end
    return pairs


def _size(value: str) -> tuple[int, int] | None:
    """A ``Size`` or ``Hires resize`` value, "512x768", as (512, 768): ASCII digits only, as A1111
    writes it (a 0 is refused, where it must be, by the request's validation)."""
    width, separator, height = value.partition("x")
    if not separator or not all(0 < len(part) <= 6 and part.isascii() and part.isdigit() for part in (width, height)):
        return None
    return int(width), int(height)


def parse_parameters(text: str) -> tuple[dict[str, Any], dict[str, str]]:
    """Parse an A1111 infotext into (request fields, other key/values).

    Request fields use our names (``guidance_scale``, ``width``...). A sampler we know is
    returned by its canonical name; one we do not is returned as written, for the caller to
    report. ``Schedule type: Karras`` (A1111 >= 1.9) is folded into the sampler name. Image to
    image: with any ``Hires ...`` key the image is a hires-fix txt2img (``enable_hr``; its
    ``Denoising strength`` is ``hr_denoising_strength``); otherwise ``Outpaint ...`` keys mean
    mode outpaint, the mask keys (``Mask blur``, ``Masked content``, ``Inpaint area``...) inpaint,
    and ``Denoising strength`` alone img2img. Numbers
    are read as the request validator reads them (bounded, ASCII); one that is not a number is
    returned among the other key/values. Linear in the length of ``text``.
    """
    lines = text.strip().split("\n")
    last = lines[-1] if lines else ""
    found = _find_params(last)
    if len(found) >= 3:
        lines = lines[:-1]
    else:
        found = []
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
    for key, value in found:
        raw[key.strip()] = _unquote(value.strip())

    extras: dict[str, str] = {}
    sampler = raw.pop("Sampler", None)
    schedule = raw.pop("Schedule type", None)
    if sampler is not None:
        fields["sampler"], left_over = _sampler_name(sampler, schedule)
        if left_over:
            extras["Schedule type"] = schedule or ""
    hr_sampler = raw.pop("Hires sampler", None)
    hr_schedule = raw.pop("Hires schedule type", None)
    if hr_sampler is not None:
        fields["hr_sampler_name"], left_over = _sampler_name(hr_sampler, hr_schedule)
        if left_over:
            extras["Hires schedule type"] = hr_schedule or ""
    elif hr_schedule is not None:
        extras["Hires schedule type"] = hr_schedule
    # What the image was made by: a hires fix writes its own Denoising strength (A1111's txt2img);
    # otherwise that key means img2img, the mask keys inpainting, ours for outpainting outpainting.
    hires = hr_sampler is not None or any(key in raw for key in HIRES_KEYS)
    if hires:
        fields["enable_hr"] = True
    elif any(key in raw for key in OUTPAINT_KEYS):
        fields["mode"] = "outpaint"
    elif any(key in raw for key in MASK_KEYS):
        fields["mode"] = "inpaint"
    elif "Denoising strength" in raw:
        fields["mode"] = "img2img"
    if fields.get("mode") in ("inpaint", "outpaint") and "Mask blur" not in raw:
        fields["mask_blur"] = 0  # A1111 writes no Mask blur when it is 0
    simple = {"Steps": ("steps", whole_number), "CFG scale": ("guidance_scale", real_number),
              "Seed": ("seed", whole_number), "Eta DDIM": ("eta", real_number), "Eta": ("eta", real_number),
              "Autoguidance scale": ("autoguidance_scale", real_number),
              "CLIP guidance scale": ("clip_guidance_scale", real_number),
              "CLIP cutouts": ("clip_cutouts", whole_number), "CLIP guidance every": ("clip_guidance_every", whole_number),
              "Denoising strength": ("hr_denoising_strength" if hires else "denoising_strength", real_number),
              "Mask blur": ("mask_blur", whole_number), "Masked area padding": ("inpaint_full_res_padding", whole_number),
              "Hires upscale": ("hr_scale", real_number), "Hires steps": ("hr_second_pass_steps", whole_number),
              **{key: (name, whole_number) for key, name in OUTPAINT_KEYS.items()}}
    texts = {"Hires upscaler": "hr_upscaler", "Hires prompt": "hr_prompt", "Hires negative prompt": "hr_negative_prompt"}
    named = {"Masked content": ("inpainting_fill", {name: number for number, name in INPAINTING_FILLS.items()}),
             "Resize mode": ("resize_mode", {name: number for number, name in RESIZE_MODES.items()}),
             "Mask mode": ("inpainting_mask_invert", {"Inpaint masked": False, "Inpaint not masked": True}),
             "Inpaint area": ("inpaint_full_res", {"Whole picture": False, "Only masked": True})}
    for key, value in raw.items():
        try:
            if key in simple:
                name, number = simple[key]
                fields.setdefault(name, number(value))
            elif key == "Size" and _size(value):
                fields["width"], fields["height"] = _size(value)
            elif key in texts:
                fields[texts[key]] = value
            elif key in named and value in named[key][1]:
                fields[named[key][0]] = named[key][1][value]
            elif key == "Resize mode" and value in ("0", "1", "2"):
                fields["resize_mode"] = int(value)
            elif key == "Hires resize" and _size(value):  # "1024x0": 0, that side keeps the aspect ratio
                fields["hr_resize_x"], fields["hr_resize_y"] = _size(value)
            elif key == "CLIP guidance window" and "-" in value:
                start, end = value.split("-", 1)
                fields["clip_guidance_start"], fields["clip_guidance_end"] = real_number(start), real_number(end)
            else:
                extras[key] = value
        except (TypeError, ValueError):
            extras[key] = value
    return fields, extras


def parse_lora_hashes(text: str) -> dict[str, str]:
    """A1111's ``Lora hashes`` value (``name: hash, name2: hash2``) as {name: short hash}; linear,
    and pairs that are not ``name: hash`` are left out."""
    hashes: dict[str, str] = {}
    for part in text.split(",")[:4 * MAX_LORAS]:
        name, separator, digest = part.rpartition(":")
        name, digest = name.strip(), digest.strip()
        if separator and name and len(name) <= MAX_LORA_NAME_CHARS and digest.isascii() and digest.isalnum():
            hashes[name] = digest.lower()
    return hashes


def write_png(image: Image.Image, metadata: Mapping[str, Any], parameters: str, path_or_file: str | Path | IO[bytes]) -> None:
    """Save ``image`` as PNG with the ``parameters`` and ``ldmsite`` (JSON) text chunks."""
    info = PngImagePlugin.PngInfo()
    info.add_text(PARAMETERS_CHUNK, parameters)  # tEXt, or iTXt when not Latin-1 (PIL decides)
    info.add_text(JSON_CHUNK, json.dumps(metadata, ensure_ascii=True, sort_keys=True, default=str))
    image.save(path_or_file, format="PNG", pnginfo=info)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_WANTED_CHUNKS = (PARAMETERS_CHUNK, JSON_CHUNK)


def _png_bytes(file: str | Path | IO[bytes] | bytes) -> bytes:
    if isinstance(file, (bytes, bytearray)):
        return bytes(file)
    if isinstance(file, (str, Path)):
        return Path(file).read_bytes()
    return file.read()


def _inflate(data: bytes, keyword: str) -> bytes:
    inflater = zlib.decompressobj()
    try:
        text = inflater.decompress(data, MAX_TEXT_CHARS * 4 + 1)  # UTF-8: at most 4 bytes a character
    except zlib.error:
        raise PngMetadataError(f"has a broken {keyword!r} text chunk") from None
    if len(text) > MAX_TEXT_CHARS * 4 or inflater.unconsumed_tail:
        raise PngMetadataError(f"has a {keyword!r} text longer than {MAX_TEXT_CHARS} characters")
    return text


def _text_chunk(kind: bytes, data: memoryview) -> tuple[str, str] | None:
    """(keyword, text) of a tEXt, zTXt or iTXt chunk whose keyword we read; None for any other.
    Nothing is copied before the length is checked (``data`` is a view of the file)."""
    end = bytes(data[:80]).find(b"\0")  # a keyword is 1 to 79 Latin-1 characters
    keyword = bytes(data[:max(end, 0)]).decode("latin-1")
    if end < 1 or keyword not in _WANTED_CHUNKS:
        return None
    rest = data[end + 1:]
    if len(rest) > MAX_TEXT_CHARS * 4:
        raise PngMetadataError(f"has a {keyword!r} text longer than {MAX_TEXT_CHARS} characters")
    rest = bytes(rest)
    if kind == b"tEXt":
        text = rest.decode("latin-1")
    elif kind == b"zTXt":
        text = _inflate(rest[1:], keyword).decode("latin-1")
    else:  # iTXt: compressed?, method, language\0, translated keyword\0, UTF-8 text
        if len(rest) < 2:
            return None
        compressed, rest = rest[0], rest[2:]
        _, _, rest = rest.partition(b"\0")
        _, _, rest = rest.partition(b"\0")
        if compressed:
            rest = _inflate(rest, keyword)
        try:
            text = rest.decode("utf-8")
        except UnicodeDecodeError:
            return None
    if len(text) > MAX_TEXT_CHARS:
        raise PngMetadataError(f"has a {keyword!r} text longer than {MAX_TEXT_CHARS} characters")
    return keyword, text


def read_png_text(file: str | Path | IO[bytes] | bytes) -> dict[str, str]:
    """The ``parameters`` and ``ldmsite`` text chunks of a PNG, wherever they are (before or after
    the pixels), read chunk by chunk: no pixel is decoded. Raises :class:`PngMetadataError` for a
    file that is not a PNG, a header size over ``MAX_PNG_PIXELS``, or a text over ``MAX_TEXT_CHARS``."""
    data = _png_bytes(file)
    if not data.startswith(_PNG_SIGNATURE) or data[12:16] != b"IHDR" or len(data) < 33:
        raise PngMetadataError("is not a PNG image")
    width, height = struct.unpack(">II", data[16:24])
    if width * height > MAX_PNG_PIXELS:
        raise PngMetadataError(f"is {width}×{height} pixels; PNGs of at most {MAX_PNG_PIXELS:,} pixels "
                               "(8192×8192) are read")
    view = memoryview(data)
    texts: dict[str, str] = {}
    position, count = len(_PNG_SIGNATURE), 0
    while position + 8 <= len(data):
        count += 1
        if count > MAX_PNG_CHUNKS:
            raise PngMetadataError(f"has more than {MAX_PNG_CHUNKS:,} chunks")
        length = int.from_bytes(data[position:position + 4], "big")
        kind = data[position + 4:position + 8]
        if position + 8 + length > len(data) or kind == b"IEND":
            break
        if kind in (b"tEXt", b"zTXt", b"iTXt"):
            found = _text_chunk(kind, view[position + 8:position + 8 + length])
            if found is not None:
                texts[found[0]] = found[1]  # the last one wins, as in Pillow
        position += 12 + length
    return texts


def _stored_loras(value: Any) -> bool:
    """Our JSON chunk's ``loras``: at most ``MAX_LORAS`` [name, weight] pairs of text and a
    finite number (the validator judges the rest)."""
    return (isinstance(value, list) and len(value) <= MAX_LORAS
            and all(isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)
                    and _request_value(item[1]) and not isinstance(item[1], (str, bool)) and item[1] is not None
                    for item in value))


def _request_value(value: Any) -> bool:
    """A value our JSON chunk may hand on as a request field: JSON scalars only (the validator
    judges them), never a nested structure, an infinity or an unbounded integer; ``loras`` as
    :func:`_stored_loras` reads it."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return abs(value) <= MAX_NUMBER_MAGNITUDE
    return value is None or isinstance(value, (str, bool))


def read_png_metadata(file: str | Path | IO[bytes] | bytes) -> dict[str, Any]:
    """Everything we can read: ``fields`` (request fields), ``metadata`` (our JSON or None),
    ``parameters`` (the infotext or None) and ``extra`` (infotext keys that are not fields)."""
    text = read_png_text(file)
    parameters = text.get(PARAMETERS_CHUNK)
    metadata = None
    raw_json = text.get(JSON_CHUNK)
    if raw_json:
        try:
            metadata = json.loads(raw_json)
        except (ValueError, RecursionError):
            metadata = None
    fields: dict[str, Any] = {}
    extra: dict[str, str] = {}
    if parameters:
        fields, extra = parse_parameters(parameters)
    if isinstance(metadata, dict):
        fields = {name: metadata[name] for name in REQUEST_FIELDS if name in metadata
                  and (_stored_loras(metadata[name]) if name == "loras" else _request_value(metadata[name]))}
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
