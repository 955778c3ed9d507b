"""Source images of an image-to-image job (img2img, inpaint, outpaint): what travels beside the
request, and the pure-Pillow steps that turn them into the picture and mask a diffusers pipeline
gets. No torch here: the web process checks sources with it too.

A request (:class:`~.request.GenerationRequest`) says what to do -- ``mode``,
``denoising_strength``, ``resize_mode``, ``mask_blur``, ... -- and :class:`SourceImages` holds
the pictures it is done to. The engine's :func:`~.engine.generate` takes them as ``source=``
and calls :func:`prepare_source`, which does what AUTOMATIC1111's img2img does before sampling
(``modules/processing.py``, ``modules/images.py``, ``modules/masking.py``):

- the init image is flattened onto white (A1111's ``img2img_background_color``) and fitted to
  the request's width x height by ``resize_mode`` (:func:`resize_image`; the mask the same way);
- the mask is read as A1111 reads one (:func:`mask_from_image`: a transparent mask's alpha, else
  its grey), inverted when ``inpainting_mask_invert``, blurred by ``mask_blur`` pixels;
- for outpainting, the fitted source is pasted on a larger canvas (:func:`outpaint_canvas`) whose
  new border is pre-filled from the source's edge colours (:func:`fill_masked`, as InvokeAI's
  canvas infills before it repaints) and masked, with ``mask_blur`` pixels of overlap into the
  source so the seam is repainted too;
- ``inpainting_fill`` 0 ("fill") and 2/3 (latent noise / nothing, which A1111 also pre-fills)
  replace the masked pixels with colours from around them (:func:`fill_masked`); the latent
  part of 2 and 3 is the engine's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from PIL import Image, ImageDraw, ImageFilter, ImageOps

from .request import UnsupportedRequest

# A1111's img2img_background_color: what transparent pixels of an init image become.
BACKGROUND_COLOR = (255, 255, 255)


@dataclass(frozen=True)
class SourceImages:
    """``init_image``: the picture to start from (any size: fitted to the request's width x height
    by its ``resize_mode``). ``mask``: for inpainting, white = repaint, black = keep (grey: partly),
    the same size as ``init_image``; ``None`` for img2img and outpaint (outpaint makes its own)."""

    init_image: Image.Image
    mask: Image.Image | None = None


@dataclass(frozen=True)
class PreparedSource:
    """What the pipeline gets: ``image`` (RGB, the request's output size), ``mask`` (L, the same
    size, blurred; ``None`` for img2img), ``original`` (the fitted image before any fill: what is
    pasted back outside the mask) and the sizes the person gave (for the metadata)."""

    image: Image.Image
    mask: Image.Image | None
    original: Image.Image
    init_size: tuple[int, int]
    mask_size: tuple[int, int] | None


def check_source(mode: str, source: SourceImages | None) -> None:
    """``ValueError`` naming the field when ``source`` cannot serve ``mode``."""
    if mode == "txt2img":
        return
    if source is None or source.init_image is None:
        raise UnsupportedRequest(f"init_image: mode {mode} needs a source image (init_image); none was given")
    if not isinstance(source.init_image, Image.Image):
        raise UnsupportedRequest("init_image: must be a PIL image")
    if mode == "inpaint":
        if source.mask is None:
            raise UnsupportedRequest("mask: mode inpaint needs a mask (white = repaint); none was given")
        if not isinstance(source.mask, Image.Image):
            raise UnsupportedRequest("mask: must be a PIL image")
        if source.mask.size != source.init_image.size:
            raise UnsupportedRequest(f"mask: is {source.mask.size[0]}x{source.mask.size[1]}, but the init image is "
                             f"{source.init_image.size[0]}x{source.init_image.size[1]}; they must be the same size")


def flatten(image: Image.Image, background: tuple[int, int, int] = BACKGROUND_COLOR) -> Image.Image:
    """``image`` as RGB, transparent parts composited onto ``background`` (A1111's ``flatten``)."""
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*background, 255))
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    return image.convert("RGB")


def resize_image(image: Image.Image, width: int, height: int, resize_mode: int = 0) -> Image.Image:
    """``image`` fitted to ``width`` x ``height`` as A1111's ``images.resize_image``:
    0 just resize (stretch), 1 crop and resize (cover, centre crop), 2 resize and fill (fit,
    centred, the empty bands filled by stretching the image's edge rows or columns). Lanczos;
    the image keeps its mode (an L mask stays L)."""
    if resize_mode == 0 or image.size == (width, height):
        return image.resize((width, height), Image.LANCZOS)
    ratio, source_ratio = width / height, image.width / image.height
    canvas = Image.new(image.mode, (width, height))
    if resize_mode == 1:
        src_w = width if ratio > source_ratio else image.width * height // image.height
        src_h = height if ratio <= source_ratio else image.height * width // image.width
        resized = image.resize((src_w, src_h), Image.LANCZOS)
        canvas.paste(resized, box=(width // 2 - src_w // 2, height // 2 - src_h // 2))
        return canvas
    src_w = width if ratio < source_ratio else image.width * height // image.height
    src_h = height if ratio >= source_ratio else image.height * width // image.width
    resized = image.resize((src_w, src_h), Image.LANCZOS)
    canvas.paste(resized, box=(width // 2 - src_w // 2, height // 2 - src_h // 2))
    if ratio < source_ratio:
        fill = height // 2 - src_h // 2
        if fill > 0:
            canvas.paste(resized.resize((width, fill), box=(0, 0, width, 0)), box=(0, 0))
            canvas.paste(resized.resize((width, fill), box=(0, resized.height, width, resized.height)),
                         box=(0, fill + src_h))
    elif ratio > source_ratio:
        fill = width // 2 - src_w // 2
        if fill > 0:
            canvas.paste(resized.resize((fill, height), box=(0, 0, 0, height)), box=(0, 0))
            canvas.paste(resized.resize((fill, height), box=(resized.width, 0, resized.width, height)),
                         box=(fill + src_w, 0))
    return canvas


def mask_from_image(mask: Image.Image) -> Image.Image:
    """A mask as an L image, white = repaint. A mask with transparency (strokes painted on a
    transparent layer, as Gradio and A1111 send it) is read by its alpha; any other by its grey."""
    if mask.mode in ("RGBA", "LA", "PA") or (mask.mode == "P" and "transparency" in mask.info):
        alpha = mask.convert("RGBA").getchannel("A")
        if alpha.getextrema()[0] < 255:
            return alpha
    return mask.convert("L")


def invert_mask(mask: Image.Image) -> Image.Image:
    return ImageOps.invert(mask.convert("L"))


def blur_mask(mask: Image.Image, radius: int) -> Image.Image:
    """Gaussian blur of ``radius`` pixels (what diffusers' ``mask_processor.blur`` does)."""
    return mask.filter(ImageFilter.GaussianBlur(radius)) if radius > 0 else mask


def fill_masked(image: Image.Image, mask: Image.Image) -> Image.Image:
    """The masked pixels replaced by colours from around them: A1111's ``masking.fill`` (layers of
    the unmasked picture blurred at decreasing radii, composited; the unmasked pixels come back
    exactly on top)."""
    result = Image.new("RGBA", image.size)
    unmasked = Image.new("RGBa", image.size)
    unmasked.paste(image.convert("RGBA").convert("RGBa"), mask=ImageOps.invert(mask.convert("L")))
    unmasked = unmasked.convert("RGBa")
    for radius, repeats in ((256, 1), (64, 1), (16, 2), (4, 4), (2, 2), (0, 1)):
        blurred = unmasked.filter(ImageFilter.GaussianBlur(radius)).convert("RGBA")
        for _ in range(repeats):
            result.alpha_composite(blurred)
    return result.convert("RGB")


def outpaint_canvas(image: Image.Image, left: int, right: int, top: int, bottom: int,
                    overlap: int = 0) -> tuple[Image.Image, Image.Image]:
    """(canvas, mask) for outpainting ``image`` by the given pixels on each side: the canvas is
    ``image`` pasted at (left, top) with the new border pre-filled from its edge colours, the mask
    white on the border and ``overlap`` pixels into ``image`` on each extended side (so the seam
    is repainted), black elsewhere."""
    width, height = image.width + left + right, image.height + top + bottom
    canvas = Image.new("RGB", (width, height))
    canvas.paste(image.convert("RGB"), (left, top))
    border = Image.new("L", (width, height), 255)
    border.paste(0, (left, top, left + image.width, top + image.height))
    canvas = fill_masked(canvas, border)
    mask = Image.new("L", (width, height), 255)
    keep = (left + (overlap if left else 0), top + (overlap if top else 0),
            left + image.width - (overlap if right else 0), top + image.height - (overlap if bottom else 0))
    if keep[0] < keep[2] and keep[1] < keep[3]:
        ImageDraw.Draw(mask).rectangle((keep[0], keep[1], keep[2] - 1, keep[3] - 1), fill=0)
    return canvas, mask


def prepare_source(request, source: SourceImages | None,
                   blur: Callable[[Image.Image, int], Image.Image] | None = None) -> PreparedSource | None:
    """The picture and mask for ``request`` (a :class:`~.request.GenerationRequest`) from what the
    person gave, as described in the module docstring; ``None`` for txt2img. ``blur(mask,
    radius)``: the blur to use (the engine passes its pipeline's ``mask_processor.blur``)."""
    mode = request.mode
    if mode == "txt2img":
        return None
    check_source(mode, source)
    blur = blur or blur_mask
    init_size = tuple(source.init_image.size)
    image = resize_image(flatten(source.init_image), request.width, request.height, request.resize_mode)
    if mode == "img2img":
        return PreparedSource(image=image, mask=None, original=image, init_size=init_size, mask_size=None)
    if mode == "outpaint":
        canvas, mask = outpaint_canvas(image, request.outpaint_left, request.outpaint_right, request.outpaint_top,
                                       request.outpaint_bottom, overlap=request.mask_blur)
        original = canvas
        if request.inpainting_mask_invert:
            mask = invert_mask(mask)
        image = canvas
        mask_size = None
    else:
        mask_size = tuple(source.mask.size)
        mask = resize_image(mask_from_image(source.mask), request.width, request.height, request.resize_mode)
        if request.inpainting_mask_invert:
            mask = invert_mask(mask)
        original = image
    if request.mask_blur > 0:
        mask = blur(mask, request.mask_blur)
    if request.inpainting_fill != 1 and mode == "inpaint":
        image = fill_masked(image, mask)
    return PreparedSource(image=image, mask=mask, original=original, init_size=init_size, mask_size=mask_size)


__all__ = ["SourceImages", "PreparedSource", "check_source", "prepare_source", "flatten", "resize_image",
           "mask_from_image", "invert_mask", "blur_mask", "fill_masked", "outpaint_canvas", "BACKGROUND_COLOR"]
