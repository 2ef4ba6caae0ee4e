"""What the trainer asks of the machine it runs on: native bf16, glibc's malloc, the attention
kernel, repeatable kernels. Each answer is a log line or a yes/no; nothing here trains."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the annotations only: settings import nothing from here
    from trainer.settings import Settings


def cpu_has_native_bf16() -> bool:
    """bf16 matmuls in hardware (AVX-512 BF16 or AMX); elsewhere autocast emulates them and a
    step takes about twice as long as in fp32. oneDNN's own check answers yes on CPUs that only
    emulate, so the CPU's flags decide."""
    try:
        flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    except OSError:
        return False
    return bool({"avx512_bf16", "amx_bf16"} & set(flags.split()))


# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4


def keep_freed_memory(choice: str) -> str:
    """CPU_MALLOC=keep: glibc's malloc keeps the memory a step frees for the next step.

    By default glibc serves a large block with its own mmap and unmaps it when it is freed, and
    gives the top of the heap back to the kernel beyond a threshold; both thresholds move with
    the allocation history. A training step frees and re-allocates its activations and gradients
    every time, so each step faulted in and zeroed about 60,000 fresh pages (235 MB): a quarter of
    the step in kernel time on the 2-core VMs (make bench, section 7), and how much of it a run
    paid depended on what else it had allocated, so two runs of one trainer differed by up to 13%.
    With mmap off and the heap never trimmed, the pages stay mapped and are reused. On CUDA the
    tensors live in PyTorch's caching allocator, which already keeps them: nothing to change."""
    if choice == "system":
        return "memory: glibc's default malloc (CPU_MALLOC=system)"
    import ctypes
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.gnu_get_libc_version.restype = ctypes.c_char_p
        version = libc.gnu_get_libc_version().decode()
    except (OSError, AttributeError):
        return "memory: not glibc, the allocator is left as it is (CPU_MALLOC=keep applies to glibc only)"
    if not (libc.mallopt(M_MMAP_MAX, 0) and libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1)):
        return f"memory: WARNING: glibc {version} refused mallopt; freed memory goes back to the kernel every step"
    return f"memory: glibc {version} keeps freed memory for reuse (CPU_MALLOC=keep: no mmap per block, no trimming)"


def repeatable_kernels(device: torch.device) -> str:
    """On a CPU, the same SEED gives the same artifact, compiled or not.

    Inductor fuses the embeddings' backward into one C++ loop whose threads add into shared rows
    with atomics, so two compiled runs of one SEED part after a few steps (measured: 120 steps of
    tools.proxy_loss's reference model, two artifacts, training losses apart from step 5). In
    PyTorch's deterministic mode inductor keeps the eager scatter for it, which adds in a fixed
    order; warn_only, because an op without a deterministic kernel should warn, not stop a run.
    On CUDA nothing changes: the fast kernels (flash attention's backward among them) are kept."""
    if device.type != "cpu":
        return "kernels: CUDA's own (atomics in some backward kernels: runs of one SEED can differ in the last bits)"
    torch.use_deterministic_algorithms(True, warn_only=True)
    return "kernels: deterministic (a compiled run of one SEED repeats bit for bit)"


def select_attention_kernel(s: Settings, device: torch.device) -> tuple[str | None, str]:
    """(the document kernel, or None without ATTENTION_MASK=document; the log's `attention:` line).
    On CUDA without a document mask, allow only the flash kernel (the one that also runs GQA
    natively), so that a silent fallback to the math kernel cannot halve the speed. A probe with
    the model's head shapes checks that flash can run here; when it cannot, every kernel is
    allowed again and the line says so."""
    if s.attention_mask == "document":
        from trainer.attention import choose_kernel
        kernel, why = choose_kernel(s.attention_kernel, device, s.data_layout == "packed")
        where = "a packed stream's cu_seqlens" if s.data_layout == "packed" else "each BOS"
        return kernel, f"attention: ATTENTION_MASK=document, kernel {kernel} ({why}); documents begin at {where}"
    if device.type != "cuda":
        return None, "attention: PyTorch's CPU kernel, in fp32 for training steps under bf16 autocast"
    backends = torch.backends.cuda
    toggles = [getattr(backends, name) for name in ("enable_mem_efficient_sdp", "enable_math_sdp", "enable_cudnn_sdp")
               if hasattr(backends, name)]
    backends.enable_flash_sdp(True)
    for toggle in toggles:
        toggle(False)
    head_dim = s.model_dim // s.num_heads
    q = torch.zeros(1, s.num_heads, 16, head_dim, device=device, dtype=torch.bfloat16)
    kv = torch.zeros(1, s.num_kv_heads, 16, head_dim, device=device, dtype=torch.bfloat16)
    try:
        F.scaled_dot_product_attention(q, kv, kv, is_causal=True, enable_gqa=s.num_kv_heads != s.num_heads)
    except RuntimeError as err:
        for toggle in toggles:
            toggle(True)
        return None, (f"attention: WARNING: flash attention cannot run here ({str(err).splitlines()[0][:160]}); "
                      f"PyTorch chooses the kernel, which may be several times slower")
    return None, "attention: flash attention only (training and evaluation)"
