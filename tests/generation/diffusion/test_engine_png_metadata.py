"""PNGs carry A1111's ``parameters`` chunk and our JSON; both read back into request fields."""

import io
import json
import struct
import zlib

import pytest
from PIL import Image, PngImagePlugin
from PIL import ImageFile as PILImageFile

from generation.diffusion import (format_parameters, generate, parse_parameters, read_png_metadata,
                                  read_png_parameters, validate_request, write_png)
from generation.diffusion.pngmeta import MAX_TEXT_CHARS, PngMetadataError


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_a_generated_png_embeds_the_parameters_and_reproduces_its_request(engine_model, make_request, tmp_path):
    request = make_request(seed=40, num_images=2, negative_prompt="grey, dull", sampler="DPM++ 2M Karras",
                           clip_guidance_scale=200, clip_guidance_every=2)
    result = generate(engine_model, request)
    path = tmp_path / "second.png"
    write_png(result.images[1], result.metadata[1], result.parameters[1], path)

    with Image.open(path) as image:
        image.load()
        assert image.text["parameters"] == result.parameters[1]
        assert json.loads(image.text["ldmsite"])["model"]["hash"] == engine_model.content_hash
    fields = read_png_parameters(path)
    again = validate_request(fields, engine_model.limits)
    assert again.seed == 41 and again.num_images == 1
    assert again.to_dict() == {**request.to_dict(), "seed": 41, "num_images": 1}
    # and it regenerates the same picture
    redo = generate(engine_model, again)
    assert list(redo.images[0].getdata()) == list(result.images[1].getdata())


def test_write_png_accepts_a_file_object_and_keeps_unicode_prompts():
    image = Image.new("RGB", (8, 8), "red")
    parameters = "ein rotes Quadrat über Schnee\nSteps: 3, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 8x8"
    buffer = io.BytesIO()
    write_png(image, {"prompt": "ein rotes Quadrat über Schnee"}, parameters, buffer)
    metadata = read_png_metadata(buffer.getvalue())
    assert metadata["parameters"] == parameters
    assert metadata["fields"]["prompt"] == "ein rotes Quadrat über Schnee"


A1111_TEXT = (
    "masterpiece, a castle on a hill, (sunset:1.2)\n"
    "second prompt line\n"
    "Negative prompt: lowres, blurry\n"
    "more negative\n"
    "Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 3052, Size: 640x448, "
    'Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Lora hashes: "style: abc123, detail: def456", '
    "Version: v1.10.1"
)


def test_an_a1111_parameters_string_is_parsed_into_request_fields():
    fields, extra = parse_parameters(A1111_TEXT)
    assert fields == {
        "prompt": "masterpiece, a castle on a hill, (sunset:1.2)\nsecond prompt line",
        "negative_prompt": "lowres, blurry\nmore negative",
        "steps": 28, "sampler": "DPM++ 2M Karras", "guidance_scale": 6.5, "seed": 3052,
        "width": 640, "height": 448,
    }
    assert extra["Model"] == "v1-5-pruned-emaonly" and extra["Model hash"] == "6ce0161689"
    assert extra["Lora hashes"] == "style: abc123, detail: def456"
    request = validate_request(fields)
    assert request.sampler == "DPM++ 2M Karras" and request.width == 640


def test_an_a1111_png_reads_back_with_one_image_per_seed_and_no_autoguidance():
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 5, Size: 512x512")
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, format="PNG", pnginfo=info)
    assert read_png_parameters(buffer.getvalue()) == {
        "prompt": "a cat", "steps": 20, "sampler": "Euler a", "guidance_scale": 7.0, "seed": 5, "width": 512,
        "height": 512, "num_images": 1, "autoguidance_scale": 0.0}


def test_a_png_without_parameters_reads_as_empty():
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, format="PNG")
    assert read_png_parameters(buffer.getvalue()) == {}


def test_prompts_with_commas_and_colons_survive_the_parameters_format():
    fields = {"prompt": "a, b: c", "negative_prompt": "", "steps": 5, "sampler": "Euler", "guidance_scale": 7.0,
              "seed": 1, "width": 64, "height": 64, "clip_guidance_scale": 150.0, "clip_cutouts": 4,
              "clip_guidance_every": 4, "clip_guidance_start": 0.2, "clip_guidance_end": 0.8}
    text = format_parameters(fields, model_name="my, model", model_hash="abc")
    parsed, extra = parse_parameters(text)
    assert parsed["prompt"] == "a, b: c" and extra["Model"] == "my, model"
    assert parsed["clip_guidance_scale"] == 150 and parsed["clip_guidance_start"] == 0.2
    assert "CLIP guidance window: 0.2-0.8" in text


# --- Hostile PNGs (issue 24): read without decoding, bounded ------------------------------------------

def png_chunk(kind: bytes, data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")


def png_with_chunks(*chunks: bytes, size=(4, 4)) -> bytes:
    """A real PNG of `size` (from Pillow), with `chunks` inserted after its pixels, before IEND."""
    buffer = io.BytesIO()
    Image.new("RGB", size).save(buffer, format="PNG")
    data = buffer.getvalue()
    return data[:-12] + b"".join(chunks) + data[-12:]


def test_reading_parameters_decodes_no_pixels(monkeypatch):
    """A 13000x13000 RGBA image was decoded in full (+660 MB) to reach its text chunks."""
    data = png_with_chunks(png_chunk(b"tEXt", b"parameters\0a cat\nSteps: 20, Seed: 5, Size: 512x512"))

    def no_decoding(self, *args, **kwargs):
        raise AssertionError("pixels decoded")

    monkeypatch.setattr(PILImageFile.ImageFile, "load", no_decoding)
    assert read_png_parameters(data)["steps"] == 20  # the chunk after the pixels is found all the same


def test_a_png_larger_than_the_cap_is_refused_from_its_header():
    header = struct.pack(">IIBBBBB", 13000, 13000, 8, 6, 0, 0, 0)
    data = (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header)
            + png_chunk(b"tEXt", b"parameters\0a cat\nSteps: 20, Seed: 5, Size: 512x512")
            + png_chunk(b"IDAT", zlib.compress(b"\0" * 52001 * 4)) + png_chunk(b"IEND", b""))
    with pytest.raises(PngMetadataError, match="13000×13000"):
        read_png_metadata(data)


@pytest.mark.parametrize("kind, data", [
    (b"tEXt", b"parameters\0" + b"a" * (MAX_TEXT_CHARS + 1)),
    (b"zTXt", b"parameters\0\0" + zlib.compress(b"a" * 50_000_000)),  # a 50 MB text in 50 KB
    (b"iTXt", b"ldmsite\0\1\0\0\0" + zlib.compress(b"[" * 50_000_000)),
])
def test_a_text_chunk_longer_than_the_cap_is_refused_without_reading_it_all(kind, data):
    with pytest.raises(PngMetadataError, match="longer than"):
        read_png_metadata(png_with_chunks(png_chunk(kind, data)))


def test_compressed_and_international_text_chunks_are_read():
    text = "ein Hund über Schnee\nSteps: 9, Sampler: Euler, CFG scale: 4, Seed: 2, Size: 64x64"
    itxt = png_chunk(b"iTXt", b"parameters\0\1\0de\0\0" + zlib.compress(text.encode()))
    assert read_png_metadata(png_with_chunks(itxt))["parameters"] == text
    ztxt = png_chunk(b"zTXt", b"parameters\0\0" + zlib.compress(b"a cat\nSteps: 3, Seed: 1, Size: 8x8"))
    assert read_png_parameters(png_with_chunks(ztxt))["steps"] == 3


@pytest.mark.parametrize("data", [b"", b"not a png", b"\x89PNG\r\n\x1a\n", b"GIF89a" + b"\0" * 40])
def test_anything_but_a_png_is_refused_by_name(data):
    with pytest.raises(PngMetadataError, match="not a PNG"):
        read_png_metadata(data)


@pytest.mark.parametrize("line, field", [("Steps: 1e400", "steps"), ("Seed: " + "9" * 400, "seed"),
                                         ("CFG scale: nan", "guidance_scale"), ("Steps: ²", "steps"),
                                         ("Size: ١٢٨x١٢٨", "width"), ("CLIP guidance window: inf-1", "clip_guidance_start")])
def test_numbers_in_an_infotext_are_read_as_the_validator_reads_them(line, field):
    """`Steps: 1e400` raised OverflowError (a 500 on PNG import); a non-number is left among the extras."""
    fields, extra = parse_parameters(f"a cat\n{line}, Sampler: Euler, Model: x")
    assert field not in fields and line.split(":")[0] in extra


def test_our_json_chunk_hands_on_only_plain_request_values():
    metadata = json.dumps({"prompt": [[["x"]]], "steps": 10 ** 400, "seed": 3, "guidance_scale": float("inf"),
                           "width": "²"})
    fields = read_png_parameters(png_with_chunks(png_chunk(b"tEXt", b"ldmsite\0" + metadata.encode())))
    assert fields == {"seed": 3, "width": "²", "num_images": 1, "autoguidance_scale": 0.0}
    deep = png_chunk(b"tEXt", b"ldmsite\0" + b"[" * 60_000)
    assert read_png_metadata(png_with_chunks(deep))["metadata"] is None
