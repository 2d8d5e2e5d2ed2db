"""Reference-net K/V injection through diffusers attention processors (Animate Anyone's ReferenceNet).

The reference UNet runs once per clip at t=0; a :class:`ReferenceWriteProcessor` on each of its spatial
self-attention layers (``...attentions.N.transformer_blocks.M.attn1``) records that layer's input. In the
denoiser, a :class:`ReferenceReadProcessor` on the layer of the same name appends the recorded features
to the self-attention keys/values: ``attn1(x, encoder_hidden_states=cat([x, ref]))``, as Moore's
``ReferenceAttentionControl`` does, without replacing any forward method.

The features travel as an explicit argument: ``cross_attention_kwargs={"reference": ReferenceContext}``,
which diffusers hands to every spatial attention processor (and, under gradient checkpointing, to the
recomputation too). Motion modules never see it.

The same context says how many trailing tokens of the cross-attention context are DanceLCM face tokens to be
attended *decoupled* (IP-Adapter's layout): the CLIP token(s) and the face tokens each get their own softmax
and the two results are added before ``to_out``. Appended to the CLIP token instead, "no face" tokens (zeros,
so zero keys under SD's bias-free ``to_k``) still take softmax mass from it; decoupled, zero face tokens
attend to zero values and add exactly nothing, so a face projector whose output starts at zero leaves the
network as it was.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import AttnProcessor2_0


class ReferenceContext:
    """What one UNet call reads or writes. ``features[i]`` belongs to layer ``i`` of :func:`reference_layers`.

    Writing: ``write=True`` and ``features`` filled by the processors. Reading: ``features`` is the list from
    :class:`~animlcm.models.network.Conditioning` (``None``/empty: no reference, CFG-unconditional branch).

    A plain class, not a dataclass: FSDP rebuilds every dataclass among a sharded layer's arguments (with
    ``dataclasses.replace``), so the writer's records would land in copies the caller never sees.
    """

    __slots__ = ("face_tokens", "features", "layers", "rows", "write")

    def __init__(
        self,
        features: list[torch.Tensor | None] | None = None,
        write: bool = False,
        layers: int = 0,
        face_tokens: int = 0,
        rows: torch.Tensor | None = None,
    ) -> None:
        self.features = features
        self.write = write
        self.layers = layers
        # the last ``face_tokens`` tokens of the cross-attention context get their own softmax (decoupled)
        self.face_tokens = face_tokens
        # reading, ``(B,)`` bool: the clips whose queries see their reference keys (None: all). The others
        # are the unconditional rows of a batched CFG call: their reference keys are masked out of the softmax
        self.rows = rows

    @classmethod
    def writer(cls, num_layers: int, face_tokens: int = 0) -> ReferenceContext:
        return cls(features=[None] * num_layers, write=True, layers=num_layers, face_tokens=face_tokens)


def reference_layers(unet) -> list[str]:
    """Names of the spatial self-attention layers (attention-processor keys), in a fixed order.

    Both UNets give the same names for the same layers (``UNetMotionModel``'s non-motion names equal
    ``UNet2DConditionModel``'s), which is how writer and reader pair up.
    """
    return sorted(
        name
        for name in unet.attn_processors
        if ".attentions." in f".{name}" and name.endswith("attn1.processor") and "motion_modules" not in name
    )


class _SpatialProcessor(AttnProcessor2_0):
    """Base: plain SDPA attention that accepts (and by default ignores) the ``reference`` context.

    Subclasses change only :meth:`keys_values`, the states this call's keys/values come from; the signature
    with ``reference`` (which diffusers inspects to pass the kwarg on) is written once, here.
    """

    def __init__(self, index: int | None = None):
        super().__init__()
        self.index = index  # layer ``index`` of :func:`reference_layers` (None: not a reference layer)

    def __call__(
        self,
        attn,
        hidden_states,
        encoder_hidden_states=None,
        attention_mask=None,
        temb=None,
        reference: ReferenceContext | None = None,
    ):
        if reference is not None and reference.face_tokens and attn.is_cross_attention:
            return decoupled_cross_attention(
                attn, hidden_states, encoder_hidden_states, reference.face_tokens, attention_mask
            )
        keys = self.keys_values(hidden_states, encoder_hidden_states, reference)
        if keys is not encoder_hidden_states and reference is not None and reference.rows is not None:
            attention_mask = _reference_mask(reference.rows, hidden_states, keys, attention_mask)
        return super().__call__(attn, hidden_states, keys, attention_mask, temb)

    def keys_values(self, hidden_states, encoder_hidden_states, reference: ReferenceContext | None):
        return encoder_hidden_states


def _reference_mask(rows: torch.Tensor, hidden_states, keys, attention_mask) -> torch.Tensor:
    """``(B*F, 1, L + L_ref)`` bool: every query sees the frame's own tokens; only ``rows`` see the
    reference's (the unconditional rows of a batched CFG call do not)."""
    if attention_mask is not None:
        raise ValueError("a batched CFG call (reference rows) does not combine with another attention mask")
    n, own = hidden_states.shape[0], hidden_states.shape[1]
    seen = rows.to(hidden_states.device).repeat_interleave(n // rows.shape[0])  # (B,) -> (B*F,)
    mask = torch.ones(n, 1, keys.shape[1], dtype=torch.bool, device=hidden_states.device)
    mask[:, 0, own:] = seen[:, None]
    return mask


def decoupled_cross_attention(attn, hidden_states, context, face_tokens: int, attention_mask=None):
    """softmax(q k_main^T) v_main + softmax(q k_face^T) v_face, then ``to_out`` (IP-Adapter's decoupled
    cross-attention, with the layer's own ``to_k``/``to_v`` for both, so it adds no parameters).

    The first part is ``AttnProcessor2_0``'s computation op for op (the same bits as a network without face
    tokens); SD's cross-attention has no masks, group/spatial norms or 4-D inputs, which are not handled.
    """
    if attention_mask is not None or hidden_states.ndim != 3 or attn.spatial_norm or attn.group_norm:
        raise ValueError("decoupled face attention supports SD-style transformer cross-attention only")
    if attn.norm_cross:
        context = attn.norm_encoder_hidden_states(context)
    b = hidden_states.shape[0]

    def heads(x: torch.Tensor) -> torch.Tensor:
        return x.view(b, -1, attn.heads, x.shape[-1] // attn.heads).transpose(1, 2)

    def keys(x: torch.Tensor) -> torch.Tensor:
        k = heads(attn.to_k(x))
        return k if attn.norm_k is None else attn.norm_k(k)

    query = heads(attn.to_q(hidden_states))
    if attn.norm_q is not None:
        query = attn.norm_q(query)
    main, face = context[:, :-face_tokens], context[:, -face_tokens:]
    out = F.scaled_dot_product_attention(query, keys(main), heads(attn.to_v(main)))
    out = out + F.scaled_dot_product_attention(query, keys(face), heads(attn.to_v(face)))
    out = out.transpose(1, 2).reshape(b, -1, out.shape[1] * out.shape[-1]).to(query.dtype)
    out = attn.to_out[1](attn.to_out[0](out))
    if attn.residual_connection:
        out = out + hidden_states
    return out / attn.rescale_output_factor


class ReferenceWriteProcessor(_SpatialProcessor):
    """On the reference UNet's ``attn1``: record the layer input, then attend as usual."""

    def keys_values(self, hidden_states, encoder_hidden_states, reference: ReferenceContext | None):
        if reference is not None and reference.write:
            reference.features[self.index] = hidden_states
        return encoder_hidden_states


class ReferenceReadProcessor(_SpatialProcessor):
    """On the denoiser's ``attn1``: keys/values over ``cat([x, ref])``, ``ref`` repeated over the frames."""

    def keys_values(self, hidden_states, encoder_hidden_states, reference: ReferenceContext | None):
        if reference is not None and not reference.write and reference.features:
            ref = reference.features[self.index]
            if ref.shape[0] != hidden_states.shape[0]:
                # (B, L, C) reference for (B*F, L, C) frames: frame f of clip b is row b*F + f.
                ref = ref.repeat_interleave(hidden_states.shape[0] // ref.shape[0], dim=0)
            encoder_hidden_states = torch.cat([hidden_states, ref.to(hidden_states.dtype)], dim=1)
        return encoder_hidden_states


def install_processors(unet, write: bool) -> int:
    """Set reference processors on every spatial attention layer of ``unet``; returns the layer count.

    Cross-attention (``attn2``) layers get the plain base processor, which accepts the ``reference`` kwarg
    (diffusers warns about kwargs a processor does not take); motion modules keep their processors.
    """
    layers = {name: i for i, name in enumerate(reference_layers(unet))}
    cls = ReferenceWriteProcessor if write else ReferenceReadProcessor
    procs = {}
    for name, proc in unet.attn_processors.items():
        if name in layers:
            procs[name] = cls(layers[name])
        elif "motion_modules" in name:
            procs[name] = proc
        else:
            procs[name] = _SpatialProcessor()
    unet.set_attn_processor(procs)
    return len(layers)
