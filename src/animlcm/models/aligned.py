"""Weights in freshly allocated memory, so that one model gives the same bits however it was loaded.

Loaders that map a safetensors file (transformers' and diffusers' ``from_pretrained``, safetensors'
``load_file``) can hand out tensors whose data starts at any 8-byte offset of the file. CPU matrix kernels
take another (vectorised) path for data that is not 64-byte aligned and sum in another order: the same
weights then give outputs ~1 ulp apart, and a seed would no longer give the same frames through the pipeline
and through ``render``. Copying such tensors once at load time removes the difference (device copies are
always aligned).
"""

from __future__ import annotations

from torch import nn

ALIGNMENT = 64  # bytes: what PyTorch's CPU allocator guarantees


def realign(module: nn.Module) -> nn.Module:
    """Copy every CPU parameter and buffer of ``module`` whose data is not 64-byte aligned (in place)."""
    for sub in module.modules():
        for p in sub._parameters.values():
            if p is not None and p.device.type == "cpu" and p.data_ptr() % ALIGNMENT:
                p.data = p.data.clone()
        for name, b in sub._buffers.items():
            if b is not None and b.device.type == "cpu" and b.data_ptr() % ALIGNMENT:
                sub._buffers[name] = b.clone()
    return module
