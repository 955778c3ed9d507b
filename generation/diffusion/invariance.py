"""Batch-invariant kernels: image k of a job is the same bits whoever else shares its batch.

A worker that batches different people's jobs (:mod:`.batch`) runs one UNet call over all of
their samples. On the CPU the stock kernels do not give a sample the same result in a batch
of 16 as in a batch of 2 (measured on the built-in model, PyTorch 2.13, one thread: every
``Conv2d`` and most ``Linear`` layers differed in the last bits, the UNet's output by up to
2.4e-6): oneDNN picks its convolution algorithm and blocking from the whole input shape, and
a GEMM with two or fewer rows takes a GEMV path with another summation order. Over 25 steps
those bits move pixels. Normalisation, softmax, attention (per sample and head) and
elementwise ops were already invariant.

So :func:`make_batch_invariant` gives the layers of a loaded model forms of the two offenders
that compute a sample the same way whatever the batch size:

- ``Linear``: one batched matrix product with one matrix per sample (``torch.bmm`` of the
  sample's ``(rows, in)`` by ``W^T``), whose per-matrix kernel depends only on that matrix's shape;
- a VAE decodes one latent at a time (diffusers' ``enable_slicing``);
- ``Conv2d``: the stock kernel, one sample at a time -- every call has the shape of a batch of
  one. An im2col form (``unfold`` + ``bmm``) was tried first: as fast on the built-in model's 8x8
  latents, but 1.7x slower alone on 32x32 latents and far slower with two threads; oneDNN's own
  kernel for one sample was as fast as its batched one from 64x64 latents up (measured, 1 thread).

:func:`.engine.generate` and :func:`.batch.generate_batch` both run on such layers, so a job run
alone and the same job inside any batch are one computation (``tests/generation/diffusion/
test_batch.py`` checks it bit for bit, one and two threads were checked by hand). Cost against the
stock kernels, a job alone, one thread, CPU time (best of 3): +15% for the built-in model's default
job, +16% for a tiny UNet at 32x32 latents (docs/PERFORMANCE.md); the built-in model's test images
came out the same pixels. What batching then gains is mostly the Linear layers' and the per-call
overheads: a batch of 8 of the built-in model's default jobs took 2.35x less CPU time than the 8
alone.

Only on the CPU: on CUDA the stock kernels are kept (one convolution per sample would give away
much of what batching wins on a GPU, and it was not measured there), so there a batched image can
differ from its job run alone in the last bits; ``metadata["kernels"]`` records which kernels made
an image.
"""

from __future__ import annotations

import functools

import torch

INVARIANT = "batch-invariant"  # metadata["kernels"]: per-sample Linear and Conv2d (this module)
STOCK = "stock"  # PyTorch's own kernels


def invariant_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear`` as one matrix product per leading index (per sample)."""
    lead = x.shape[:-1]
    rows = x.reshape(lead[0] if lead else 1, -1, x.shape[-1])
    out = torch.bmm(rows, weight.t().unsqueeze(0).expand(rows.shape[0], -1, -1))
    if bias is not None:
        out = out + bias
    return out.reshape(*lead, weight.shape[0])


def _linear_forward(module, x):
    return invariant_linear(x, module.weight, module.bias)


def _conv2d_forward(module, x):
    if x.dim() != 4 or x.shape[0] == 1:
        return type(module).forward(module, x)
    # One sample at a time through the stock kernel: every call has the shape of a batch of one.
    return torch.cat([type(module).forward(module, x[index:index + 1]) for index in range(x.shape[0])])


_FORWARDS = {torch.nn.Linear: _linear_forward, torch.nn.Conv2d: _conv2d_forward}


def make_batch_invariant(*modules: torch.nn.Module | None) -> None:
    """Give every ``Linear`` and ``Conv2d`` layer of ``modules`` (on the CPU) its batch-invariant
    forward, in place and once (a second call changes nothing).

    Per layer instance rather than a ``TorchFunctionMode`` around the run: a mode sees every
    tensor operation, and on the built-in model that cost 30% of a job's CPU time against 11% for
    patched layers (best of 8, with the im2col convolution of the first version). Layers that subclass these with a forward of their own are left
    alone, and so are layers added later (a LoRA's adapter layers: jobs with LoRAs are never
    batched, so they only ever run alone)."""
    for root in modules:
        if root is None or getattr(root, "_ldm_batch_invariant", False):
            continue
        # Once per root: a LoRA's adapter layers, added to a UNet later, keep the stock kernels in
        # every job, not only in the jobs that came before the next call.
        root._ldm_batch_invariant = True
        if hasattr(root, "enable_slicing") and uses_invariant_kernels(root.device):
            # A VAE: diffusers' own slicing decodes one latent at a time. Decoding a batch, the
            # tiny test VAE gave the first image other bits at batch 1 than at batch 2 and up
            # (elementwise kernels vectorise over the whole tensor; its scalar tail lands elsewhere).
            root.enable_slicing()
        for layer in root.modules():
            for kind, forward in _FORWARDS.items():
                if isinstance(layer, kind) and type(layer).forward is kind.forward \
                        and "forward" not in vars(layer) and uses_invariant_kernels(layer.weight.device):
                    layer.forward = functools.partial(forward, layer)


def uses_invariant_kernels(device) -> bool:
    return torch.device(device).type == "cpu"


def kernels_name(device) -> str:
    return INVARIANT if uses_invariant_kernels(device) else STOCK
