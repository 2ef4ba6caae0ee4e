"""Every CUDA-only branch, on a GPU: autocast, pinned read-ahead and non-blocking copies, the
device-side pool and selection, index_add_ domain counts, the attention-kernel probe, fused
AdamW, the artifact's round trip, the document mask. Skipped, with the reason, without CUDA;
tools/gpu_check.py runs them first on a GPU machine."""
from __future__ import annotations

import glob
import os

import numpy as np
import pytest
import torch

import train_gpt as tg
from curriculum import CurriculumConfig
from curriculum.loader import Position
from curriculum.read_ahead import ReadAhead
from curriculum.readers.sequential import SequentialRows
from curriculum.selector import WindowStats
from curriculum.pool import Pooled
from sources import batch_source

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (tools/gpu_check.py)")]
CUDA = torch.device("cuda", 0)
SMALL = dict(NUM_LAYERS="2", MODEL_DIM="64", NUM_HEADS="4", NUM_KV_HEADS="2", BIGRAM_VOCAB_SIZE="512")


@pytest.fixture(scope="module")
def shards(request) -> dict:
    """The bundle's shards on the GPU machine (GPU_CHECK_DATA, set by tools/gpu_check.py: it has
    no corpus to build), else the embedded dataset."""
    if os.environ.get("GPU_CHECK_DATA"):
        return dict(data_path=os.environ["GPU_CHECK_DATA"])
    return request.getfixturevalue("dataset")


def train_files(dataset) -> list:
    return sorted(glob.glob(dataset["data_path"] + "/*train_*.bin"))


def loader(dataset, device, config=CurriculumConfig(), order="sequential"):
    return batch_source(train_files(dataset), seq_len=64, batch_seqs=8, rank=0, world_size=1, vocab_size=1024,
                       device=device, config=config, order=order, seed=3)


def test_cuda_computes_in_bf16_autocast():
    s = tg.parse_settings(SMALL)[0]
    assert tg.use_bf16(s, CUDA)
    model = tg.GPT(s).to(CUDA)
    seen = []
    model.blocks[0].mlp.fc.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    idx = torch.randint(0, 1024, (2, 32), device=CUDA)
    with tg.autocast(CUDA, True):
        loss = model(idx, idx)
    assert seen == [torch.bfloat16] and loss.dtype == torch.float32


def test_the_read_ahead_pins_host_rows_and_the_loader_copies_them_without_blocking(shards):
    rows = SequentialRows(train_files(shards), 64, 0, 1)
    ahead = ReadAhead(rows, rows.state_dict(), first=8, then=8, vocab_size=1024, domain_index=None, domains=0, pin=True)
    try:
        assert ahead.get().tokens.is_pinned()
    finally:
        ahead.close(wait=True)
    batches = loader(shards, CUDA)
    try:
        x, y = batches.next_batch(Position(0.5))
        assert x.device.type == "cuda" and x.dtype == torch.int64 and x.shape == (8, 64)
    finally:
        batches.close()


@pytest.mark.parametrize("pool", ["fresh", "carry"])
@pytest.mark.parametrize("order", ["sequential", "shuffled"])
def test_the_pool_and_selection_on_the_device_keep_the_rows_the_cpu_keeps(shards, pool, order):
    config = CurriculumConfig(enabled=True, pool=pool)
    on_gpu, on_cpu = loader(shards, CUDA, config, order), loader(shards, torch.device("cpu"), config, order)
    try:
        for k in range(12):
            (xg, _), (xc, _) = on_gpu.next_batch(Position(k / 12)), on_cpu.next_batch(Position(k / 12))
            assert torch.equal(xg.cpu(), xc), f"micro-batch {k}"
        gpu, cpu = on_gpu.summary(Position(step=12))["data"], on_cpu.summary(Position(step=12))["data"]
        for key in ("sequences_trained", "read_domain_counts", "trained_domain_counts"):
            assert gpu.get(key) == cpu.get(key), key
        assert gpu["kept_score_mean"] == pytest.approx(cpu["kept_score_mean"], rel=1e-5)
    finally:
        on_gpu.close()
        on_cpu.close()


def test_domain_counts_accumulate_with_index_add_on_the_device():
    stats = WindowStats(CUDA, 3)
    domains = torch.tensor([0, 2, 2, 1, 2], device=CUDA)
    kept = Pooled(torch.zeros(5, 4, device=CUDA), torch.arange(5.0, device=CUDA), None, domains)
    stats.add(kept, kept, 1)
    stats.add(kept, kept, 2)
    acc, counts = stats.read()
    assert counts.tolist() == [2, 2, 6] and acc[0] == 20.0


def test_the_attention_probe_chooses_flash_on_this_gpu():
    kernel, line = tg.select_attention_kernel(tg.parse_settings(SMALL)[0], CUDA)
    assert kernel is None and line == "attention: flash attention only (training and evaluation)", line
    kernel, document = tg.select_attention_kernel(tg.parse_settings(SMALL | dict(ATTENTION_MASK="document"))[0], CUDA)
    assert kernel in ("flex", "dense") and "ATTENTION_MASK=document" in document, document
    kernel, packed = tg.select_attention_kernel(tg.parse_settings(SMALL | dict(ATTENTION_MASK="document",
                                                                               DATA_LAYOUT="packed"))[0], CUDA)
    assert kernel in ("flash_varlen", "flex", "dense") and f"kernel {kernel}" in packed, packed


def test_adamw_is_fused_on_cuda():
    s = tg.parse_settings(SMALL)[0]
    model = tg.GPT(s).to(CUDA)
    optimizers = tg.build_optimizers(model, s, lambda f: f)
    adams = [o for o in optimizers if isinstance(o, torch.optim.AdamW)]
    assert adams and all(g.get("fused") for o in adams for g in o.param_groups)


def test_the_artifact_round_trip_of_a_cuda_model_is_the_cpu_models():
    s = tg.parse_settings(SMALL)[0]
    torch.manual_seed(0)
    model = tg.GPT(s).to(CUDA)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    state = model.state_dict()
    blob = tg.serialize_artifact(tg.quantize_state(state))
    back = tg.dequantize_state(tg.load_artifact(blob), {k: v.cpu() for k, v in state.items()})
    cpu_blob = tg.serialize_artifact(tg.quantize_state({k: v.cpu() for k, v in state.items()}))
    assert blob == cpu_blob and set(back) == set(state)


CUDA_KERNELS = ["flex", "per_document", "dense"]


def document_model(kernel: str):
    s = tg.parse_settings(SMALL | dict(ATTENTION_MASK="document"))[0]
    torch.manual_seed(0)
    model = tg.GPT(s, kernel).to(CUDA)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


@pytest.mark.parametrize("kernel", CUDA_KERNELS)
def test_the_document_mask_is_exact_on_the_gpu_in_fp32(kernel):
    model = document_model(kernel)
    idx = torch.randint(3, 1000, (2, 64), device=CUDA)
    idx[:, 0] = idx[0, 30] = tg.BOS_ID
    changed = idx.clone()
    changed[0, 10] = 7 if int(idx[0, 10]) != 7 else 8
    torch.backends.cuda.matmul.allow_tf32 = False
    with torch.no_grad():
        a, b = model(idx, idx), model(changed, idx)
    assert torch.equal(a[0, 30:], b[0, 30:]) and not torch.equal(a[0, :30], b[0, :30])
    assert np.isfinite(a.cpu().numpy()).all()


@pytest.mark.parametrize("kernel", ["flash_varlen"] + CUDA_KERNELS)
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_a_packed_streams_pieces_see_nothing_of_the_pieces_before_them_in_bf16(kernel, compiled):
    from trainer.attention import varlen_function
    if kernel == "flash_varlen" and varlen_function() is None:
        pytest.skip("FlashAttention's varlen kernel is not importable here")
    model = document_model(kernel)
    run = torch.compile(model, dynamic=False) if compiled else model
    idx = torch.randint(3, 1000, (1, 256), device=CUDA)
    cu = torch.tensor([0, 100, 160] + [256] * 61, dtype=torch.int32, device=CUDA)
    extra = dict(starts=tg.starts_from_cu_seqlens(cu, 256)) | (dict(cu_seqlens=cu) if kernel == "flash_varlen" else {})
    changed = idx.clone()
    changed[0, 50] = 7 if int(idx[0, 50]) != 7 else 8
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        a, b = run(idx, idx, **extra), run(changed, idx, **extra)
    assert torch.equal(a[0, 100:], b[0, 100:]) and not torch.equal(a[0, :100], b[0, :100])
    loss = run(idx, idx, **extra).mean()
    loss.backward()
    assert torch.isfinite(loss)
