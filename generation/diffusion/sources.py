"""Source images of an image-to-image job (img2img, inpaint, outpaint): what travels beside the
request. No torch here: the web process checks sources with it too.

A request (:class:`~.request.GenerationRequest`) says what to do -- ``mode``,
``denoising_strength``, ``resize_mode``, ``mask_blur``, ... -- and :class:`SourceImages` holds
the pictures it is done to. The engine's :func:`~.engine.generate` takes them as ``source=``.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image


@dataclass(frozen=True)
class SourceImages:
    """``init_image``: the picture to start from (any size: fitted to the request's width x height
    by its ``resize_mode``). ``mask``: for inpainting, white = repaint, black = keep (grey: partly),
    the same size as ``init_image``; ``None`` for img2img and outpaint (outpaint makes its own)."""

    init_image: Image.Image
    mask: Image.Image | None = None
