"""Causal attention kept inside documents (ATTENTION_MASK=document): the kernels and the choice
among them. Every kernel takes q, k, v as [B, heads, T, head_dim] and each position's document
id `doc` [B, T] (ascending along T); `flash_varlen` also takes the `cu_seqlens` of a packed
`[1, N]` stream, whose documents they are.

- `flash_varlen`: FlashAttention's `flash_attn_varlen_func` (flash_attn_interface, FlashAttention
  3, or flash_attn), on CUDA with a packed stream; the records' kernel.
- `flex`: FlexAttention with a document block mask, compiled; CUDA (on the CPU PyTorch 2.13's
  FlexAttention has no backward, so it cannot train there).
- `per_document`: SDPA over each document on its own, causal; exact anywhere, the CPU's choice.
- `dense`: SDPA with a dense [B, 1, T, T] mask; memory grows with T², the last resort.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

KERNELS = ("auto", "flash_varlen", "flex", "per_document", "dense")


@dataclass
class Documents:
    """Where the documents of a batch are, for ATTENTION_MASK=document."""
    kernel: str
    ids: Tensor                     # [B, T] each position's document number in its row
    cu_seqlens: Tensor | None       # a packed stream's boundaries (the flash_varlen kernel's input), else None
    max_seqlen: int


def packed_model_inputs(x: Tensor, y: Tensor, cu_seqlens: Tensor, document_mask: bool, kernel: str | None,
                        seq_len: int) -> tuple[Tensor, Tensor, dict]:
    """A packed [1, N] micro-batch as the model takes it: with the document mask, the stream and
    its piece starts (and cu_seqlens for flash_varlen, whose length varies: marked dynamic);
    without, the stream cut into rows of seq_len, as DATA_LAYOUT=rows has it."""
    if not document_mask:
        return x.view(-1, seq_len), y.view(-1, seq_len), {}
    documents = dict(starts=starts_from_cu_seqlens(cu_seqlens, x.size(1)))
    if kernel == "flash_varlen":
        torch._dynamo.maybe_mark_dynamic(cu_seqlens, 0)
        documents["cu_seqlens"] = cu_seqlens
    return x, y, documents


def starts_from_cu_seqlens(cu_seqlens: Tensor, n: int) -> Tensor:
    """[1, n] booleans, True at every piece start of a packed stream (the padding entries, n, fall
    off the end): device work of a fixed shape, no synchronisation."""
    marks = torch.zeros(n + 1, dtype=torch.bool, device=cu_seqlens.device)
    return marks.index_fill(0, cu_seqlens.long(), True)[:n][None]


def document_ids(starts: Tensor) -> Tensor:
    """Each position's document number in its row: the tokens before a row's first start are one more document."""
    return torch.cumsum(starts, dim=1)


@functools.lru_cache(maxsize=1)
def varlen_function():
    """FlashAttention's varlen kernel where it is importable (FlashAttention 3 first), else None."""
    for module in ("flash_attn_interface", "flash_attn"):
        try:
            return getattr(__import__(module), "flash_attn_varlen_func")
        except (ImportError, AttributeError):
            continue
    return None


def flex_available() -> bool:
    try:
        from torch.nn.attention.flex_attention import flex_attention  # noqa: F401
    except ImportError:
        return False
    return True


def choose_kernel(asked: str, device: torch.device, packed: bool) -> tuple[str, str]:
    """(the kernel, why), for ATTENTION_KERNEL=`asked` on this device and layout."""
    if asked != "auto":
        return asked, "ATTENTION_KERNEL"
    if device.type == "cuda":
        if packed and varlen_function() is not None:
            return "flash_varlen", "FlashAttention's varlen kernel is importable"
        if flex_available():
            return "flex", "FlashAttention's varlen kernel is not importable" if packed else "rows carry no cu_seqlens"
        return "dense", "WARNING: neither FlashAttention nor FlexAttention is available: a dense mask, memory ~ T^2"
    return "per_document", "FlexAttention has no backward on the CPU (torch 2.13)"


def dense(q: Tensor, k: Tensor, v: Tensor, doc: Tensor, gqa: bool) -> Tensor:
    t = doc.size(1)
    causal = torch.ones(t, t, dtype=torch.bool, device=doc.device).tril()
    mask = ((doc[:, :, None] == doc[:, None, :]) & causal)[:, None]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)


@torch.compiler.disable  # a loop over documents found on the host: eager, so their number never recompiles
def per_document(q: Tensor, k: Tensor, v: Tensor, doc: Tensor, gqa: bool) -> Tensor:
    rows = []
    for b in range(doc.size(0)):
        cuts = (torch.nonzero(doc[b, 1:] != doc[b, :-1]).flatten() + 1).tolist()
        bounds = [0, *cuts, doc.size(1)]
        rows.append(torch.cat([F.scaled_dot_product_attention(q[b:b + 1, :, a:e], k[b:b + 1, :, a:e], v[b:b + 1, :, a:e],
                                                              is_causal=True, enable_gqa=gqa)
                               for a, e in zip(bounds, bounds[1:])], dim=2))
    return torch.cat(rows)


def flex(q: Tensor, k: Tensor, v: Tensor, doc: Tensor, gqa: bool) -> Tensor:
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    def same_document_causal(b, h, q_idx, kv_idx):
        return (doc[b, q_idx] == doc[b, kv_idx]) & (q_idx >= kv_idx)

    block_mask = create_block_mask(same_document_causal, doc.size(0), None, doc.size(1), doc.size(1),
                                   device=doc.device)
    return flex_attention(q, k, v, block_mask=block_mask, enable_gqa=gqa)


@torch.compiler.disable  # the extension's op, outside the graph; cu_seqlens' length varies by bucket
def flash_varlen(q: Tensor, k: Tensor, v: Tensor, cu_seqlens: Tensor, max_seqlen: int) -> Tensor:
    """q, k, v [1, heads, N, head_dim] of one packed stream."""
    to_rows = lambda t: t[0].transpose(0, 1).contiguous()  # [N, heads, head_dim]
    out = varlen_function()(to_rows(q), to_rows(k), to_rows(v), cu_seqlens, cu_seqlens, max_seqlen, max_seqlen,
                            causal=True)
    out = out[0] if isinstance(out, tuple) else out
    return out.transpose(0, 1)[None]


def attend_documents(kernel: str, q: Tensor, k: Tensor, v: Tensor, doc: Tensor, gqa: bool,
                     cu_seqlens: Tensor | None = None, max_seqlen: int = 0) -> Tensor:
    if kernel == "flash_varlen":
        if cu_seqlens is not None:
            return flash_varlen(q, k, v, cu_seqlens, max_seqlen)
        kernel = "flex" if flex_available() else "dense"  # evaluation's windows are rows: their documents by mask
    if kernel == "flex":
        return flex(q, k, v, doc, gqa)
    if kernel == "dense":
        return dense(q, k, v, doc, gqa)
    return per_document(q, k, v, doc, gqa)
