"""`make bench`: what the curriculum costs, as ratios against the baseline measured in the same run.

The arms: `baseline` (curriculum off), `fresh` (the curriculum, CURRICULUM_POOL=fresh: reads 2x,
trains on half) and `carry` (CURRICULUM_POOL=carry: the rest waits on the device).

1. Each difficulty signal alone (every entry of SCORES): throughput in tokens/s on one CPU thread, on pools of
   real training text at the CPU configuration's and the 1xH100 shapes.
2. Documents per batch: how many documents of the embedded corpus a baseline batch and a 2x
   pool span, for DATA_ORDER=sequential and shuffled (the variety a step sees).
3. The loader alone: milliseconds per micro-batch for each arm (read-ahead, transfer, scoring,
   selection, gather), at the CPU configuration's shapes and at the 1xH100 shapes of SPEC.md
   (48 sequences of 2048 tokens per micro-batch).
4. Paired steps: one process, one model, one loader per arm, taking turns step by step, so
   steps differ only in where their batch came from and machine drift cancels: the geometric
   mean of the per-step ratios against the baseline with its 95% CI.
5. Where a step's time goes, per arm: blocks of steps with only that arm's loader alive (as in
   a real run, where no other loader's thread competes), each step split into the main thread's
   time in next_batch (waiting, scoring, selection) and the rest (forward, backward, optimiser),
   beside the CPU time the read-ahead thread used. The model's work is the same in every arm, so
   a difference in the rest is interference (the reader competing for cores, cache, memory).
   With --replay, also: recorded baseline and curriculum batches replayed with no loader alive,
   which tells whether the kept sequences' content makes the model's step slower.
6. Evaluation: one pass over the validation split with the CPU configuration's model, for
   non-overlapping windows and sliding windows at strides 128 and 64, as ratios to the first.
7. The trainer as a user runs it: separate train_gpt.py processes (configs/cpu.env, a fixed
   number of steps), one per arm, taking turns step by step (tools/turns.py), one ring per
   repeat with the arms in a seeded order: each arm's step-time ratio to the baseline with its 95% CI,
   which runs one after the other cannot give on a machine that drifts by 10% in minutes. With
   the decomposition (the default), controls in the same rings: the pool's work without its
   content (pool_only), reading 2x alone (read_only), the fresh arm's recorded batches in a
   baseline process (replay) and in a baseline-trained model (replay_on_baseline_state),
   flush-to-zero (baseline_ftz), training steps attending in bf16 as before train_gpt.attend
   (baseline_bf16_attention: what its fp32 attention saves), PyTorch's deterministic mode off (baseline_atomic_kernels: what
   repeating bit for bit costs), and glibc's default malloc (the *_system_malloc arms: the
   page faults behind the 4-16% gap of issue 19, gone with CPU_MALLOC=keep); each arm's page
   faults and kernel time per step, and torch.profiler's operators, fresh against baseline; and
   mix_adaptive's recorded batches in a MIX=stratified process (mix_replay), which splits the
   adaptive mixer's cost into its content (mix_replay against mix_stratified) and its own work
   (mix_adaptive against mix_replay).

8. The attention kernel alone at configs/cpu.env's training shapes, forward and backward in bf16
   and fp32 (why a CPU's training step attends in fp32). The document mask
   (ATTENTION_MASK=document) against the causal model: one training step each in turn on the same batch, at the CPU configuration and at the 1xH100 model and sequence length
   (9 x 512, 2048 tokens; 2 sequences per step, eager: a CPU cannot take 48), the geometric mean
   of the per-step ratios with its 95% CI; and documents per row for each DATA_ALIGN.

9. The difficulty index (curriculum/index.py): each signal's build rate over the embedded corpus
   in tokens/s per process, the proxy loss's scoring rate with its reference model, and the
   projected time for FineWeb's 8B training tokens on 2 and on 16 cores. Section 7 has the
   DATA_ORDER=curriculum trainer against the shuffled baseline (the order_curriculum arm), and
   MIX=adaptive against MIX=stratified over the same three domains (mix_adaptive).

    python -m tools.bench [--pairs 60] [--blocks 6] [--steps 40] [--repeats 3] [--skip-trainer] [--replay]
                          [--cost-only] [--no-decompose]     # make bench-cost: section 7 alone
                          [--mask-only]                      # section 8 alone
                          [--index-only]                     # section 9 alone
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import glob
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.stats
import torch
import torch.nn.functional as F

import train_gpt as tg  # the trainer's own settings, model, optimisers and step
from curriculum import SCORES, BatchSource, DomainIndex, Shape, open_data_path, open_shard, shard_token_count
from curriculum.loader import Position
from curriculum.readers.aligned import row_table
from curriculum.readers.sequential import SequentialRows
from curriculum.readers.shuffled import ShuffledRows
from trainer.provenance import device_name
from curriculum.documents import PieceScorer, document_pieces
from curriculum.packed_source import PackedBatches, PackedStatistics
from curriculum.selector import corpus_surprisal
from curriculum.scores import NEEDS_UNIGRAM_COUNTS
from tools import turns
from tools.envfile import ROOT, read_env_file
from tools.runs import rotated


H100_MICRO_SEQS = 48  # 786,432 tokens per step / 8 micro-batches / 2048 tokens (SPEC.md, 1xH100)
ARMS = ("baseline", "fresh", "carry")
ARM_ENV = {"baseline": dict(CURRICULUM="0"), "fresh": dict(CURRICULUM="1", CURRICULUM_POOL="fresh"),
           "carry": dict(CURRICULUM="1", CURRICULUM_POOL="carry")}


def cpu_settings(env: dict) -> tg.Settings:
    """The CPU configuration as the trainer reads it, curriculum on (the arms switch it per loader)."""
    paths = {k: str(ROOT / env[k]) for k in ("DATA_PATH", "TOKENIZER_PATH")}
    return tg.read_settings(dict(os.environ) | env | paths | dict(CURRICULUM="1"))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def arms_in_turn(k: int) -> tuple[str, ...]:
    """The arms in the k-th rotation, so that no arm always goes first."""
    return tuple(rotated(list(ARMS), k))


def train_files(s: tg.Settings) -> list[Path]:
    return [Path(p) for p in sorted(glob.glob(s.train_files))]


def make_source(s: tg.Settings, seq_len: int, seqs: int, arm: str, device) -> BatchSource:
    """The data path of the CPU configuration's plan for one arm, at this shape."""
    config = dataclasses.replace(s.curriculum, enabled=arm != "baseline", pool="carry" if arm == "carry" else "fresh")
    return open_data_path(dataclasses.replace(s.data, curriculum=config), Shape(seq_len, seqs * seq_len), device)


def loader_ms_per_batch(source: BatchSource, batches: int, device) -> float:
    try:
        for _ in range(3):  # fill the read-ahead queue, warm the allocator
            source.next_batch(Position(0.3))
        synchronize(device)
        t0 = time.perf_counter()
        for k in range(batches):
            source.next_batch(Position(k / batches))
        synchronize(device)
        return 1000 * (time.perf_counter() - t0) / batches
    finally:
        source.close()


def bench_loader(s: tg.Settings, device) -> list[dict]:
    rows = []
    for label, seq_len, seqs, n in (("cpu config", s.train_seq_len, s.micro_batch_seqs, 200),
                                    ("1xH100 shapes", 2048, H100_MICRO_SEQS, 40)):
        best = {arm: min(loader_ms_per_batch(make_source(s, seq_len, seqs, arm, device), n, device)
                         for _ in range(3)) for arm in ARMS}
        rows.append(dict(shapes=f"{label}: {seqs} x {seq_len}", ms=best,
                         ratio={arm: best[arm] / best["baseline"] for arm in ARMS[1:]}))
    return rows


def bench_packing_interference(s: tg.Settings, blocks: int = 6, per_block: int = 40) -> dict:
    """The packing thread's scores beside a training-like main thread, in one process: ms per
    main-thread step (a matmul forward and backward on every core) with no packing, with the
    curriculum's packing on torch's default thread count (as before), and on one thread of its own;
    blocks alternate so that drift cancels. Medians of blocks, and each against no packing."""
    x = torch.randn(s.micro_batch_seqs * s.train_seq_len, 512)
    w = torch.randn(512, 1536, requires_grad=True)
    config = dataclasses.replace(s.curriculum, enabled=True)
    n = s.micro_batch_seqs * s.train_seq_len

    def steps(own: bool | None) -> float:
        batches = None if own is None else PackedBatches(train_files(s), 0, 1, s.vocab_size, s.train_seq_len, 64,
                                                         config, pin=False, own_thread_count=own)
        try:
            if batches is not None:
                batches.get(n, 0.5)
            t0 = time.perf_counter()
            for k in range(per_block):
                if batches is not None and k % 4 == 0:  # a micro-batch taken: the next one is packed meanwhile
                    batches.get(n, 0.5)
                (x @ w).relu().square().sum().backward()
            return 1000 * (time.perf_counter() - t0) / per_block
        finally:
            if batches is not None:
                batches.close()
    arms = {"no packing": None, "packing, default threads": False, "packing, one thread": True}
    ms = {a: [] for a in arms}
    for b in range(blocks):
        for a in rotated(list(arms), b):
            ms[a].append(steps(arms[a]))
    base = statistics.median(ms["no packing"])
    return {a: dict(ms=statistics.median(v), ratio=statistics.median(v) / base) for a, v in ms.items()}


GIL_PAUSE_S = 2e-4  # a pause in the probe's loop longer than this: another thread ran (or the OS did)


def gil_pauses_ms(source, batches: int, probe_ms: float) -> tuple[float, float]:
    """The main thread's Python work beside a data path: after each micro-batch (the read-ahead
    then prepares the next) it runs pure Python for `probe_ms`, and every pause in that loop is
    time it could not run: another thread held the GIL, or the OS ran something else. (pauses
    in ms per micro-batch, the read-ahead's CPU ms per micro-batch); `source` None: the loop
    alone, the floor."""
    try:
        if source is not None:
            for _ in range(3):  # the read-ahead's queue filled, the allocator warm
                source.next_batch(Position(0.3))
        cpu0 = 0.0 if source is None else reader_cpu_ms(source)
        paused = 0.0
        for k in range(batches):
            if source is not None:
                source.next_batch(Position(k / batches))
            last = time.perf_counter()
            end = last + probe_ms / 1000
            while last < end:
                now = time.perf_counter()
                if now - last > GIL_PAUSE_S:
                    paused += now - last
                last = now
        cpu = 0.0 if source is None else reader_cpu_ms(source) - cpu0
        return 1000 * paused / batches, cpu / batches
    finally:
        if source is not None:
            source.close()


def reader_cpu_ms(source) -> float:
    """The CPU time the data path's own thread has used so far."""
    return source.reader_cpu_ms if hasattr(source, "reader_cpu_ms") else source.batches.cpu_ms


def bench_gil(s: tg.Settings, batches: int = 150, probe_ms: float = 20.0) -> list[dict]:
    """What the read-ahead thread takes of the main thread's Python time (on CUDA the kernel
    launches wait behind it), for each arm of the rows and the packed layout, at the CPU
    configuration's shapes and the 1xH100 shapes: pauses beyond the probe's floor, per micro-batch."""
    floor = min(gil_pauses_ms(None, batches, probe_ms)[0] for _ in range(2))
    rows = [dict(shapes="no data path", arm="the floor", pauses_ms=floor, over_floor_ms=0.0, reader_cpu_ms=0.0)]
    cpu = torch.device("cpu")
    for label, seq_len, seqs in (("cpu config", s.train_seq_len, s.micro_batch_seqs), ("1xH100 shapes", 2048, H100_MICRO_SEQS)):
        for arm in ("baseline", "fresh", "carry", "random", "packed off", "packed fresh"):
            packed = arm.startswith("packed")
            config = dataclasses.replace(s.curriculum, enabled=arm not in ("baseline", "packed off"),
                                         pool="carry" if arm == "carry" else "fresh",
                                         score="random" if arm == "random" else s.curriculum.score)
            plan = dataclasses.replace(s.data, curriculum=config, layout="packed" if packed else "rows")
            paused, reader = gil_pauses_ms(open_data_path(plan, Shape(seq_len, seqs * seq_len), cpu), batches, probe_ms)
            rows.append(dict(shapes=f"{label}: {seqs} x {seq_len}", arm=arm, pauses_ms=paused,
                             over_floor_ms=max(paused - floor, 0.0), reader_cpu_ms=reader))
    return rows


def bench_documents_per_batch(s: tg.Settings, batches: int = 400) -> list[dict]:
    """Documents spanned by the rows of one micro-batch (the CPU configuration has one per step),
    for each order, at the batch's size and at a 2x pool's."""
    files = train_files(s)
    lengths = [shard_token_count(f) for f in files]
    index = DomainIndex.from_shards(files, lengths)
    if index is None:
        return []
    rows = []
    for order in ("sequential", "shuffled"):  # the orders that need no index
        for label, n in (("baseline batch", s.micro_batch_seqs), ("2x pool", 2 * s.micro_batch_seqs)):
            reader = (ShuffledRows(files, s.train_seq_len, 0, 1, s.seed) if order == "shuffled"
                      else SequentialRows(files, s.train_seq_len, 0, 1))
            counts = [index.documents_spanned(reader.take(n)[1], s.train_seq_len + 1) for _ in range(batches)]
            rows.append(dict(order=order, rows=label, sequences=n, median=float(np.median(counts)),
                             one_document=sum(c == 1 for c in counts) / len(counts)))
    return rows


def bench_packed_batches(s: tg.Settings, batches: int = 200) -> list[dict]:
    """DATA_LAYOUT=packed at the CPU configuration's and the 1xH100 shapes, on the embedded corpus:
    documents, pieces and cu_seqlens boundaries per micro-batch against the records' compiled
    buckets (256 entries), for the records' loader (curriculum off) and the V over pieces."""
    rows = []
    for label, seq_len, n in (("cpu config", s.train_seq_len, s.micro_batch_seqs * s.train_seq_len),
                              ("1xH100 shapes", 2048, H100_MICRO_SEQS * 2048)):
        for arm, config in (("off", dataclasses.replace(s.curriculum, enabled=False)),
                            ("V, fresh 2x", dataclasses.replace(s.curriculum, enabled=True))):
            source = PackedBatches(train_files(s), 0, 1, s.vocab_size, seq_len, 64, config, pin=False)
            stats = PackedStatistics(64)
            try:
                for i in range(batches):
                    stats.taken(source.get(n, i / batches)[0], 0.0)
            finally:
                source.close()
            c = stats.c
            rows.append(dict(shapes=f"{label}: [1, {n}], pieces <= {seq_len}", arm=arm, batches=batches,
                             documents_per_batch=c["documents"] / batches, pieces_per_batch=c["pieces"] / batches,
                             boundaries_max=c["boundaries_max"], batches_over_256=c["over_buckets"]))
    return rows


def scorer_tokens_per_s(score, tokens: torch.Tensor, vocab_size: int, repeats: int = 30) -> float:
    """Best of several timed batches of calls, on one thread: the number a kernel is capable of."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        score(tokens, vocab_size)
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(10):
                score(tokens, vocab_size)
            best = min(best, (time.perf_counter() - t0) / 10)
        return tokens.numel() / best
    finally:
        torch.set_num_threads(threads)


def bench_scorer(s: tg.Settings) -> list[dict]:
    """Each signal's tokens per second on one thread over a pool of rows, at vocabularies 1024 and
    8192 (each on its own tokenization of the embedded corpus: `make data VOCAB=8192`), and the
    document loader's piece scorer over a pool of real document pieces of mixed lengths."""
    rows = []
    for vocab in (1024, 8192):
        files = sorted(glob.glob(f"./data/datasets/embedded_mix_sp{vocab}/*train_*.bin"))
        if not files:
            print(f"bench: no embedded_mix_sp{vocab} corpus: `make data VOCAB={vocab}` builds it; its rows are left out")
            continue
        stream = np.asarray(open_shard(files[0]))
        for label, seq_len, keep in (("cpu config", s.train_seq_len, s.micro_batch_seqs),
                                     ("1xH100 shapes", 2048, H100_MICRO_SEQS)):
            pool = s.curriculum.pool_size(keep)
            tokens = torch.from_numpy(stream[:pool * (seq_len + 1)].astype(np.int64)).view(pool, seq_len + 1)
            for name, score in SCORES.items():
                if name in NEEDS_UNIGRAM_COUNTS:
                    score = functools.partial(score, surprisal=corpus_surprisal(tuple(files), vocab)[0])
                rows.append(dict(score=name, vocab=vocab, shapes=f"{label}: {pool} x {seq_len + 1}",
                                 tokens_per_s=scorer_tokens_per_s(score, tokens, vocab)))
            scorer = PieceScorer("unigram_entropy", vocab, files)
            span_tokens = pool * seq_len
            bos = np.flatnonzero(stream[:span_tokens] == tg.BOS_ID)
            cuts = document_pieces(bos, span_tokens, seq_len)
            pieces = [stream[a:b] for a, b in zip(cuts.tolist(), np.append(cuts[1:], span_tokens).tolist())]
            rows.append(dict(score="unigram_entropy (pieces)", vocab=vocab,
                             shapes=f"{label}: {len(pieces)} pieces, {span_tokens} tokens",
                             tokens_per_s=scorer_tokens_per_s(lambda t, v: scorer(pieces), torch.empty(span_tokens), vocab,
                                                              repeats=5)))
    return rows


class StepModel:
    """The CPU configuration's model, optimisers and compiled step, shared by every arm."""

    def __init__(self, s: tg.Settings):
        self.s, self.device = s, tg.pick_device(s)
        compile_fn = torch.compile if s.torch_compile else (lambda f: f)
        torch.manual_seed(s.seed)
        self.model = tg.GPT(s).to(self.device)
        self.step_model = torch.compile(self.model, dynamic=False) if s.torch_compile else self.model
        self.optimizers = tg.build_optimizers(self.model, s, compile_fn)
        self.bf16 = tg.use_bf16(s, self.device)

    def step(self, source, progress: float) -> float:
        """One training step, in ms."""
        synchronize(self.device)
        t0 = time.perf_counter()
        tg.train_step(self.step_model, self.model, self.optimizers, self.s, source, Position(progress), self.bf16)
        synchronize(self.device)
        return 1000 * (time.perf_counter() - t0)


def bench_document_mask(s: tg.Settings, pairs: int, seqs: int | None = None, eager: bool = False) -> dict:
    """A step of the document-masked model against one of the causal model, in turn, on the same
    real batch (one loader, the baseline's), the models starting from the same weights."""
    s = dataclasses.replace(s, torch_compile=s.torch_compile and not eager)
    seqs = seqs or s.micro_batch_seqs
    models = {mask: StepModel(dataclasses.replace(s, attention_mask=mask, grad_accum_steps=1,
                                                  train_batch_tokens=seqs * s.train_seq_len))
              for mask in ("causal", "document")}
    source = make_source(s, s.train_seq_len, seqs, "baseline", models["causal"].device)
    times: dict[str, list[float]] = {mask: [] for mask in models}
    try:
        batches = [source.next_batch(Position(0.0)) for _ in range(4)]
        replay = {mask: Replay(batches) for mask in models}
        for mask in models:  # compilation and the allocator
            models[mask].step(replay[mask], 0.5)
        for i in range(pairs):
            for mask in (("causal", "document") if i % 2 == 0 else ("document", "causal")):
                times[mask].append(models[mask].step(replay[mask], 0.5))
    finally:
        source.close()
    documents = [float((x == tg.BOS_ID).sum(dim=1).add(x[:, 0] != tg.BOS_ID).float().mean()) for x, _ in batches]
    return dict(pairs=pairs, seqs=seqs, seq_len=s.train_seq_len, layers=s.num_layers, width=s.model_dim,
                compiled=s.torch_compile, documents_per_row=float(np.mean(documents)),
                median_ms={m: statistics.median(t) for m, t in times.items()},
                document_vs_causal=geometric_ratio(times["document"], times["causal"]))


def documents_per_aligned_row(s: tg.Settings) -> list[dict]:
    """DATA_ALIGN=bos's row table at the CPU configuration's row length: documents per row, and
    the share of the stream a pass holds, for the cut at the row's length and at a quarter of it."""
    rows = []
    for doc_max in (0, (s.train_seq_len + 1) // 4):
        table = row_table(tuple(train_files(s)), s.train_seq_len, doc_max)
        total = sum(shard_token_count(f) for f in train_files(s))
        rows.append(dict(doc_max=doc_max or s.train_seq_len + 1, rows=table.rows,
                         documents_per_row=float(table.row_documents.mean()),
                         documents_per_batch=float(table.row_documents.mean() * s.micro_batch_seqs),
                         share_of_stream=table.rows * (s.train_seq_len + 1) / total))
    return rows


def bench_attention_kernel(s: tg.Settings, calls: int = 10) -> dict:
    """PyTorch's attention kernel alone at these settings' training shapes, causal, in bf16 and in
    fp32: milliseconds per forward and per backward, the mean of `calls` after 3 (why
    train_gpt.attend trains in fp32 on a CPU)."""
    gen = torch.Generator().manual_seed(0)
    head_dim = s.model_dim // s.num_heads
    out = {}
    for dtype in (torch.bfloat16, torch.float32):
        q, k, v = (torch.randn(s.micro_batch_seqs, h, s.train_seq_len, head_dim, generator=gen).to(dtype).requires_grad_()
                   for h in (s.num_heads, s.num_kv_heads, s.num_kv_heads))
        grad = torch.randn(q.shape, generator=gen).to(dtype)
        forward = backward = 0.0
        for i in range(calls + 3):
            t0 = time.perf_counter()
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=s.num_kv_heads != s.num_heads)
            t1 = time.perf_counter()
            y.backward(grad)
            t2 = time.perf_counter()
            if i >= 3:
                forward, backward = forward + t1 - t0, backward + t2 - t1
        out[str(dtype).removeprefix("torch.")] = dict(forward_ms=1000 * forward / calls, backward_ms=1000 * backward / calls)
    return dict(shape=[s.micro_batch_seqs, s.num_heads, s.num_kv_heads, s.train_seq_len, head_dim],
                threads=torch.get_num_threads(), ms=out)


def mask_section(s: tg.Settings, pairs: int, report: dict) -> None:
    kernel = report["attention_kernel"] = bench_attention_kernel(s)
    print(f"== the attention kernel alone at configs/cpu.env's training shapes {kernel['shape']} "
          f"(B, heads, kv heads, T, head dim), {kernel['threads']} threads: ms per call")
    for dtype, ms in kernel["ms"].items():
        print(f"  {dtype:<9} forward {ms['forward_ms']:7.2f}  backward {ms['backward_ms']:7.2f}")
    print(f"== ATTENTION_MASK=document against causal: a training step each in turn on the same batch, {pairs} rounds")
    print(f"  {cpu_line()}")
    h100 = dataclasses.replace(s, num_layers=9, model_dim=512, num_heads=8, num_kv_heads=4, train_seq_len=2048,
                               bigram_vocab_size=4096)
    report["document_mask"] = [bench_document_mask(s, pairs), bench_document_mask(h100, max(pairs // 3, 6), seqs=2,
                                                                                   eager=True)]
    for r in report["document_mask"]:
        c = r["document_vs_causal"]
        print(f"  {r['layers']} x {r['width']}, {r['seqs']} x {r['seq_len']} tokens{' compiled' if r['compiled'] else ' eager'}: "
              f"causal {r['median_ms']['causal']:.1f} ms, document {r['median_ms']['document']:.1f} ms, ratio "
              f"{c['ratio']:.3f} [{c['ratio_ci95'][0]:.3f}, {c['ratio_ci95'][1]:.3f}] "
              f"({r['documents_per_row']:.2f} documents per row)")
    report["aligned_rows"] = documents_per_aligned_row(s)
    print(f"== DATA_ALIGN=bos at {s.train_seq_len + 1}-token rows (DATA_ALIGN=none: see documents per batch above)")
    for r in report["aligned_rows"]:
        print(f"  DOC_MAX_TOKENS={r['doc_max']:<5} {r['rows']:>7,} rows, {r['documents_per_row']:.2f} documents per row, "
              f"{r['documents_per_batch']:.1f} per batch, a pass holds {100 * r['share_of_stream']:.1f}% of the stream")


def geometric_ratio(times: list[float], base: list[float]) -> dict:
    log_ratios = np.log(np.array(times) / np.array(base))
    ci = scipy.stats.ttest_1samp(log_ratios, 0.0).confidence_interval(0.95)
    return dict(ratio=float(np.exp(log_ratios.mean())), ratio_ci95=[float(np.exp(ci.low)), float(np.exp(ci.high))])


def bench_paired_steps(s: tg.Settings, steps: int) -> dict:
    m = StepModel(s)
    sources = {arm: make_source(s, s.train_seq_len, s.micro_batch_seqs, arm, m.device) for arm in ARMS}
    times: dict[str, list[float]] = {arm: [] for arm in ARMS}
    try:
        for arm in ARMS:  # compilation and the allocator
            for _ in range(3):
                m.step(sources[arm], 0.5)
        for i in range(steps):
            for arm in arms_in_turn(i):
                times[arm].append(m.step(sources[arm], i / steps))
        read = {arm: sources[arm].summary(Position(step=steps + 3))["data"]["sequences_read"] for arm in ARMS}
    finally:
        for source in sources.values():
            source.close()
    return dict(pairs=steps, sequences_read=read, median_ms={arm: statistics.median(times[arm]) for arm in ARMS},
                against_baseline={arm: geometric_ratio(times[arm], times["baseline"]) for arm in ARMS[1:]})


class TimedSource:
    """A loader whose next_batch is timed on the main thread (and waited for on a GPU)."""

    def __init__(self, source: BatchSource, device):
        self.source, self.device, self.ms = source, device, 0.0

    def next_batch(self, at: Position):
        t0 = time.perf_counter()
        out = self.source.next_batch(at)
        synchronize(self.device)
        self.ms += 1000 * (time.perf_counter() - t0)
        return out

    def observe(self, per_token_loss) -> None:  # the seam's other per-micro-batch call (a no-op without MIX)
        self.source.observe(per_token_loss)


def bench_step_breakdown(s: tg.Settings, blocks: int, steps_per_block: int = 10) -> dict:
    """Per arm and step: the main thread's time in next_batch, the rest of the step, and the
    read-ahead thread's CPU time; in blocks with only that arm's loader alive, arms rotated."""
    m = StepModel(s)
    parts = {arm: dict(step_ms=[], batch_ms=[], rest_ms=[], reader_cpu_ms=[]) for arm in ARMS}
    for b in range(blocks + 1):  # block 0 compiles and warms every arm, and is not counted
        for arm in arms_in_turn(b):
            source = TimedSource(make_source(s, s.train_seq_len, s.micro_batch_seqs, arm, m.device), m.device)
            try:
                for _ in range(3):  # fill the read-ahead queue
                    m.step(source, 0.5)
                source.ms, cpu0 = 0.0, source.source.reader_cpu_ms
                step_ms = [m.step(source, (b + k / steps_per_block) / (blocks + 1)) for k in range(steps_per_block)]
                if b:
                    p, n = parts[arm], steps_per_block
                    p["step_ms"].append(sum(step_ms) / n)
                    p["batch_ms"].append(source.ms / n)
                    p["rest_ms"].append((sum(step_ms) - source.ms) / n)
                    p["reader_cpu_ms"].append((source.source.reader_cpu_ms - cpu0) / n)
            finally:
                source.source.close()
    out = {arm: {k: statistics.mean(v) for k, v in p.items()} for arm, p in parts.items()}
    for arm in ARMS[1:]:  # blocks of one round ran minutes apart at most: pair them, as drift is large
        out[arm]["step_vs_baseline"] = geometric_ratio(parts[arm]["step_ms"], parts["baseline"]["step_ms"])
    return out


class Replay:
    """A loader that hands out batches recorded earlier, in turn: the model's step alone."""

    def __init__(self, batches: list):
        self.batches, self.i = batches, 0

    def next_batch(self, at: Position):
        self.i += 1
        return self.batches[(self.i - 1) % len(self.batches)]


def bench_replay(s: tg.Settings, blocks: int) -> dict:
    """The baseline's and the curriculum's batches, recorded, then replayed with no loader alive:
    does the model step slower on the sequences the curriculum keeps (their content)?"""
    m = StepModel(s)
    recorded = {}
    for arm in ("baseline", "fresh"):
        source = make_source(s, s.train_seq_len, s.micro_batch_seqs, arm, m.device)
        recorded[arm] = [source.next_batch(Position(k / 40)) for k in range(40)]
        source.close()
    times: dict[str, list[float]] = {arm: [] for arm in recorded}
    for b in range(blocks + 1):
        for arm in (("baseline", "fresh") if b % 2 == 0 else ("fresh", "baseline")):
            replay = Replay(recorded[arm])
            block = [m.step(replay, 0.5) for _ in range(10)]
            if b:
                times[arm].append(statistics.mean(block))
    return dict(ms={arm: statistics.mean(t) for arm, t in times.items()},
                fresh_vs_baseline=geometric_ratio(times["fresh"], times["baseline"]))


def bench_eval_strides(s: tg.Settings) -> list[dict]:
    """Seconds for one evaluation of the whole validation split, per stride (the model is
    untrained: the cost does not depend on the weights)."""
    device = tg.pick_device(s)
    torch.manual_seed(s.seed)
    model = tg.GPT(s).to(device)
    val = tg.load_validation_tokens(s.val_files, s.train_seq_len, s.val_max_tokens)
    tables = tg.ByteTables.from_sentencepiece(s.tokenizer_path, s.vocab_size).to(device)
    bf16 = tg.use_bf16(s, device)
    rows = []
    for stride in (s.train_seq_len, 128, 64):
        t0 = time.perf_counter()
        tg.evaluate(model, s, val, tables, device, bf16, stride)
        synchronize(device)
        rows.append(dict(stride=stride, seconds=time.perf_counter() - t0, tokens=val.numel() - 1))
    for row in rows:
        row["ratio"] = row["seconds"] / rows[0]["seconds"]
    return rows


DOMAINS = ",".join(f"{d}=./data/datasets/embedded_{d}_sp1024/*train_*.bin" for d in ("code", "docs", "prose"))

MIX_STRATIFIED = ARM_ENV["baseline"] | dict(MIX="stratified", MIX_DATASETS=DOMAINS)
PACKED = dict(DATA_LAYOUT="packed", ATTENTION_MASK="document")

# The ring of separate trainer processes (tools/turns.py): the arms a user compares, then the
# controls that take the curriculum apart. A `replay=ARM` arm trains on the batches ARM trained on,
# recorded in an untimed run of ARM first.
COST_ARMS = (turns.Arm("baseline", ARM_ENV["baseline"]),
             turns.Arm("baseline_again", ARM_ENV["baseline"]),  # the A/A control: the method's own error
             turns.Arm("fresh", ARM_ENV["fresh"]),
             turns.Arm("carry", ARM_ENV["carry"]),
             turns.Arm("random", ARM_ENV["fresh"] | dict(CURRICULUM_SCORE="random")),
             # a whole-run order from the index against its own baseline, the shuffled order (ORDER_INDEX: a bench index)
             turns.Arm("baseline_shuffled", ARM_ENV["baseline"] | dict(DATA_ORDER="shuffled")),
             turns.Arm("order_curriculum", ARM_ENV["baseline"] | dict(DATA_ORDER="curriculum")),
             # the adaptive mixer's sums, copies and updates against the same blend held fixed
             turns.Arm("mix_stratified", MIX_STRATIFIED),
             turns.Arm("mix_adaptive", MIX_STRATIFIED | dict(MIX="adaptive")))
DECOMPOSITION_ARMS = (
    turns.Arm("pool_only", ARM_ENV["fresh"], ("pool_only",)),
    turns.Arm("read_only", ARM_ENV["fresh"], ("read_only",)),
    turns.Arm("replay", ARM_ENV["baseline"], ("replay=fresh",)),
    turns.Arm("replay_on_baseline_state", ARM_ENV["baseline"], ("replay=fresh", "pretrain")),
    # MIX=stratified trained on mix_adaptive's batches: the adaptive content without the mixer, so that
    # mix_adaptive against it is the mixer's own sums, copies and updates, and it against mix_stratified the content
    turns.Arm("mix_replay", MIX_STRATIFIED, ("replay=mix_adaptive",)),
    turns.Arm("baseline_ftz", ARM_ENV["baseline"], ("ftz",)),
    # training steps attending in bf16 under a CPU's autocast, as before train_gpt.attend: what fp32 attention saves
    turns.Arm("baseline_bf16_attention", ARM_ENV["baseline"], ("bf16_attention",)),
    # the CPU's deterministic mode (repeatable_kernels) left off: what repeating bit for bit costs
    turns.Arm("baseline_atomic_kernels", ARM_ENV["baseline"], ("atomic_kernels",)),
    # glibc's own malloc, as before CPU_MALLOC=keep: the step-time gap of separate runs (issue 19)
    turns.Arm("baseline_system_malloc", ARM_ENV["baseline"] | dict(CPU_MALLOC="system")),
    turns.Arm("fresh_system_malloc", ARM_ENV["fresh"] | dict(CPU_MALLOC="system")),
    # the late records' layout (DATA_LAYOUT=packed, documents kept apart): the curriculum over document pieces
    turns.Arm("packed_baseline", ARM_ENV["baseline"] | PACKED),
    turns.Arm("packed_fresh", ARM_ENV["fresh"] | PACKED),
    turns.Arm("packed_carry", ARM_ENV["carry"] | PACKED),
    turns.Arm("packed_random", ARM_ENV["fresh"] | PACKED | dict(CURRICULUM_SCORE="random")))
REFERENCE = turns.PAIR  # per round, the geometric mean of two baseline processes
OWN_BASELINE = {"order_curriculum": "baseline_shuffled", "mix_adaptive": "mix_stratified",
                "mix_replay": "mix_stratified", "packed_fresh": "packed_baseline", "packed_carry": "packed_baseline",
                "packed_random": "packed_baseline"}
# Sources whose batches do not depend on the model: recorded without compiling or warming up (the same batches)
MODEL_FREE_BATCHES = ("fresh",)
PROFILED_STEPS = 5  # the last timed steps of baseline and fresh, under torch.profiler (not in the ratios)


def trainer_env(env: dict, steps: int) -> dict:
    """The CPU configuration as a fixed number of steps with a token evaluation: only the steps are measured."""
    return dict(os.environ) | env | dict(
        ITERATIONS=str(steps), MAX_WALLCLOCK_SECONDS="0", WARMDOWN_FRAC="0", WARMDOWN_ITERS=str(steps // 3),
        VAL_MAX_TOKENS="8193", VAL_SETS="", VAL_DOMAINS="0", TRAIN_LOG_EVERY="0", CURRICULUM_LOG_EVERY="0")


def replay_sources(arms: list[turns.Arm]) -> list[str]:
    """The arms whose batches some `replay=ARM` arm trains on, in order of first use."""
    found = [v.partition("=")[2] for a in arms for v in a.variants if v.startswith("replay=")]
    return list(dict.fromkeys(found))


def record_batches(source: turns.Arm, env: dict, folder: Path) -> Path:
    """One untimed run of `source` that saves the batches its timed steps trained on. A mixer's
    batches follow the model's losses, so such a source runs exactly as in the ring (compiled,
    warmed up, the same SEED: the same batches, bit for bit)."""
    out = folder / f"{source.name}_batches.npy"
    own = dict(TORCH_COMPILE="0", WARMUP_STEPS="0") if source.name in MODEL_FREE_BATCHES else {}
    turns.run_single(turns.Arm(f"record_{source.name}", source.env | own, (f"record={out}",)), env, folder / "record")
    return out


def with_paths(arm: turns.Arm, steps: int, recorded: dict[str, Path]) -> turns.Arm:
    """The variants with their values: the recorded batches, the pretraining length, the profiled steps."""
    def value(v: str) -> str:
        if v.startswith("replay="):
            return f"replay={recorded[v.partition('=')[2]]}"
        return f"pretrain={steps}" if v == "pretrain" else v
    variants = tuple(value(v) for v in arm.variants)
    if arm.name in ("baseline", "baseline_again", "fresh"):  # the A/A pair as one program, profiler and all
        variants += (f"profile={steps - PROFILED_STEPS}-{steps - 1}",)
    return dataclasses.replace(arm, variants=variants)


def ring_arms(decompose: bool, only: tuple[str, ...] = ()) -> list[turns.Arm]:
    """The arms of every ring: all of them, or those asked for with the references, their own
    baselines and the arms whose batches they replay."""
    arms = list(COST_ARMS) + (list(DECOMPOSITION_ARMS) if decompose or only else [])
    if not only:
        return arms
    unknown = sorted(set(only) - {a.name for a in arms})
    if unknown:
        raise ValueError(f"--cost-arms: {', '.join(unknown)} not among {', '.join(a.name for a in arms)}")
    asked = [a for a in arms if a.name in only]
    wanted = set(only) | set(REFERENCE) | {OWN_BASELINE[a] for a in only if a in OWN_BASELINE}
    return [a for a in arms if a.name in wanted | set(replay_sources(asked))]


def kept_rings(folder: Path | None, key: dict, adding: bool) -> list[dict]:
    """The rings an earlier bench kept in `folder` for the same arms, steps, layout, order scheme
    and machine: pooled with this run's, so that a ±1% interval can be reached over several
    sittings. Rings of another key are an error when rings are to be added to them, not silently
    mixed; read alone (`adding` False: the table rebuilt from committed rings, anywhere) only the
    arms, steps and layout must agree."""
    if folder is None or not folder.exists():
        return []
    rings = []
    for path in sorted(folder.glob("ring*.json")):
        kept = json.loads(path.read_text())
        # rings kept before there was a choice: the system's layout, the arms shuffled alone
        kept["key"] = {"layout": "random", "order": "shuffled"} | kept["key"]
        differ = [k for k in key if kept["key"].get(k) != key[k] and (adding or k not in ("cpu", "order"))]
        if differ:
            raise SystemExit(f"bench: {path} was measured with {kept['key']}, not {key} ({', '.join(differ)} differ): "
                             f"use another --rings-dir")
        rings.append(kept["ring"])
    if rings and not adding:
        print(f"bench: {len(rings)} rings read from {folder}, measured on {kept['key']['cpu']}", flush=True)
    return rings


def bench_trainer_in_turns(env: dict, steps: int, repeats: int, decompose: bool, block: int = 5,
                           only: tuple[str, ...] = (), rings_dir: Path | None = None, layout: str = "fixed") -> dict:
    """Separate train_gpt.py processes per arm taking turns step by step, one ring per repeat
    with the arms in a seeded order: each arm's step-time ratio to the baseline with its 95% CI, the
    loader's own numbers from the runs' summaries, and the two profiled arms' operators. With
    `rings_dir`, each ring is kept there and the rings kept before are pooled with the new ones
    (the k-th ring's order is seeded by k, so kept rings continue the same sequence)."""
    arms = ring_arms(decompose, only)
    names = {a.name for a in arms}
    run_env = trainer_env(env, steps)
    key = dict(arms=sorted(names), steps=steps, cpu=cpu_line(), layout=layout, order=turns.ORDER_SCHEME)
    rings = kept_rings(rings_dir, key, adding=repeats > 0)
    with tempfile.TemporaryDirectory() as tmp:
        if repeats:  # none: the kept rings alone are read
            if names & {"order_curriculum"}:  # the index order's arm reads a bench index, and only it
                index = str(bench_index(env, Path(tmp)))
                arms = [dataclasses.replace(a, env=a.env | dict(ORDER_INDEX=index)) if a.name == "order_curriculum" else a
                        for a in arms]
            by_name = {a.name: a for a in arms}
            recorded = {name: record_batches(by_name[name], run_env, Path(tmp)) for name in replay_sources(arms)}
            arms = [with_paths(arm, steps, recorded) for arm in arms]
        for r in range(len(rings), len(rings) + repeats):
            t0 = time.perf_counter()
            rings.append(turns.run_ring(turns.ring_order(arms, r), run_env, Path(tmp) / f"ring{r}", tag=f"ring{r}",
                                        layout=layout))
            if rings_dir is not None:
                rings_dir.mkdir(parents=True, exist_ok=True)
                tg.write_atomic(rings_dir / f"ring{r:03d}.json", json.dumps(dict(key=key, ring=rings[-1])).encode())
            print(f"bench: ring {r + 1} ({repeats} in this run) of {len(arms)} processes, {steps} steps each, "
                  f"{time.perf_counter() - t0:.0f}s", flush=True)
    if not rings:
        raise SystemExit("bench: no rings to read: --repeats 0 reads those kept in --rings-dir, and it holds none")
    end = steps - PROFILED_STEPS
    ratios = turns.ratios_in_turns(rings, REFERENCE, end=end, block=block)
    ratios["baseline_again"] = turns.ratios_in_turns(rings, "baseline", end=end, block=block)["baseline_again"]
    # the index order's own baseline is the shuffled order: the same whole rows, no index
    for arm, own in OWN_BASELINE.items():  # against the arm that differs from it in that one thing
        if arm in names and own in names:
            ratios[arm] = turns.ratios_in_turns(rings, own, end=end, block=block)[arm]
    if {"mix_adaptive", "mix_replay"} <= names:  # the same batches: what is left is the mixer's own work
        ratios["mix_adaptive_vs_replay"] = turns.ratios_in_turns(rings, "mix_replay", end=end, block=block)["mix_adaptive"]
    def mean(name, get):
        return statistics.mean(get(ring[name]) for ring in rings)
    loader = {a.name: dict(data_wait_ms_per_step=mean(a.name, lambda r: r["summary"]["data"]["data_wait_ms_per_step"]),
                           reader_cpu_ms_per_step=mean(a.name, lambda r: r["summary"]["data"]["reader_cpu_ms_per_step"]),
                           peak_memory_mb=mean(a.name, lambda r: r["summary"]["peak_memory_mb"]),
                           faults_per_step=mean(a.name, lambda r: statistics.median(r["turns"]["steps_faults"])),
                           kernel_ms_per_step=mean(a.name, lambda r: statistics.median(r["turns"]["steps_sys_ms"])))
              for a in arms}
    flush = {arm.name: rings[0][arm.name]["turns"]["flush_denormal"] for arm in arms if "ftz" in arm.variants}
    profile = turns.profile_difference(rings, "baseline", "fresh") if "fresh" in names else []
    return dict(steps=steps, repeats=len(rings), block_rounds=block, layout=layout, arms=[a.name for a in arms], ratios=ratios,
                loader=loader, flush_denormal_set=flush, profile=profile)


FINEWEB_TRAIN_TOKENS = 8_000_000_000  # the published sp1024 training set, about


def bench_index(env: dict, folder: Path) -> Path:
    """The index the order_curriculum arm reads: compression_ratio over configs/cpu.env's rows (seconds)."""
    from curriculum.index_build import build_index
    files = sorted(Path(f) for f in glob.glob(str(ROOT / env["DATA_PATH"] / "*train_*.bin")))
    out = folder / "bench.cidx"
    build_index(files, seq_len=int(env["TRAIN_SEQ_LEN"]), align="none", doc_max=0, vocab_size=int(env["VOCAB_SIZE"]),
                tokenizer=str(ROOT / env["TOKENIZER_PATH"]), signals=["compression_ratio"], out=out, progress=False)
    return out


def bench_index_build(env: dict, s: tg.Settings) -> dict:
    """Each signal's build rate over the embedded corpus (one process per core, one thread each),
    the proxy loss's scoring rate (the reference model, random weights: the rate does not depend
    on them), and each one's projected time for FineWeb's training set on 2 and 16 cores."""
    from curriculum.index import RowLayout
    from curriculum.index_build import build_index
    from curriculum.signals import TEXT_SIGNALS, TOKEN_SIGNALS
    from tools.proxy_loss import REFERENCE, SCORE_BATCH_ROWS
    files = sorted(Path(f) for f in glob.glob(str(ROOT / env["DATA_PATH"] / "*train_*.bin")))
    processes = min(os.cpu_count() or 1, 2)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        built = build_index(files, seq_len=s.train_seq_len, align="none", doc_max=0, vocab_size=s.vocab_size,
                            tokenizer=s.tokenizer_path, signals=list(TOKEN_SIGNALS + TEXT_SIGNALS), processes=processes,
                            out=Path(tmp) / "all.cidx", progress=False)
        wall = time.perf_counter() - t0
    rates = dict(built["rates"])
    # the proxy loss: the reference model's forward over rows of the corpus, as tools/proxy_loss.py scores them
    ref = cpu_settings(env | REFERENCE)
    tg.keep_freed_memory(ref.cpu_malloc)
    model = tg.GPT(ref).eval()
    forward = torch.compile(model, dynamic=False) if ref.torch_compile else model
    shards = [open_shard(f) for f in files]
    layout = RowLayout.build(shards, files, s.train_seq_len, "none", 0)
    bf16 = tg.use_bf16(ref, torch.device("cpu"))
    batches, times = 12, []
    with torch.no_grad():
        for b in range(batches + 2):
            rows = torch.from_numpy(layout.read(shards, files, np.arange(b * SCORE_BATCH_ROWS, (b + 1) * SCORE_BATCH_ROWS))
                                    .astype(np.int64))
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                forward(rows[:, :-1], rows[:, 1:])
            times.append(time.perf_counter() - t0)
    proxy_rate = SCORE_BATCH_ROWS * s.train_seq_len / statistics.median(times[2:])  # the first two compile
    out = []
    for name, rate in list(rates.items()) + [("proxy_loss", proxy_rate)]:
        per_core = rate if name != "proxy_loss" else proxy_rate / (os.cpu_count() or 1)  # the model uses every core
        out.append(dict(signal=name, tokens_per_s_per_process=rate, projected_hours_2_cores=FINEWEB_TRAIN_TOKENS /
                        (2 * per_core) / 3600, projected_hours_16_cores=FINEWEB_TRAIN_TOKENS / (16 * per_core) / 3600))
    return dict(rows=built["rows"], tokens=built["tokens"], processes=processes, wall_s=wall, signals=out)


def bench_shard_reads(s: tg.Settings, reps: int = 6, takes: int = 400) -> dict:
    """The readers read shards with pread (ShardTokens); against a memory map, for a shuffled
    micro-batch of CPU rows on the read-ahead thread, alternating: ms per micro-batch."""
    from curriculum.shards import read_shard
    ms = {"memory map": [], "pread": []}
    for rep in range(reps):
        pair = (("memory map", open_shard), ("pread", read_shard))
        for name, opener in pair if rep % 2 == 0 else pair[::-1]:
            reader = ShuffledRows(train_files(s), s.train_seq_len, 0, 1, seed=rep, open_shard=opener)
            t0 = time.perf_counter()
            for _ in range(takes):
                reader.take(s.micro_batch_seqs)
            ms[name].append(1000 * (time.perf_counter() - t0) / takes)
    return {k: statistics.median(v) for k, v in ms.items()}


def dropped_from_cache(paths: list[Path]) -> None:
    """Ask the kernel to forget the files' cached pages, so that the next read is from the disk."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)  # a page not yet written to the disk is not dropped
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def hash_seconds(paths: list[Path], cold: bool, reps: int = 3) -> float:
    """Median seconds to hash the shards' content, each time afresh (the per-process cache cleared)."""
    from curriculum import shards
    times = []
    for _ in range(reps):
        shards._HASHED.clear()
        if cold:
            dropped_from_cache(paths)
        t0 = time.perf_counter()
        for path in paths:
            shards.shard_content_hash(path)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_content_hash(s: tg.Settings, fineweb_tokens: int = 100_000_000) -> dict:
    """What the content hash costs where a run, the index and the overlap check take it: the
    embedded training shards (hashed whole), and one shard of FineWeb's size (sampled) projected
    to the 80 of the published training set."""
    from curriculum.shards import write_shard
    embedded = train_files(s)
    out = dict(embedded_shards=len(embedded), embedded_bytes=sum(p.stat().st_size for p in embedded))
    out.update(embedded_cold_s=hash_seconds(embedded, True), embedded_warm_s=hash_seconds(embedded, False))
    with tempfile.TemporaryDirectory(prefix="bench_hash_") as tmp:
        big = Path(tmp) / "fineweb_size_train_000000.bin"
        write_shard(big, np.resize(np.asarray(open_shard(embedded[0])), fineweb_tokens))
        out.update(fineweb_shard_bytes=big.stat().st_size, fineweb_shard_cold_s=hash_seconds([big], True),
                   fineweb_shard_warm_s=hash_seconds([big], False))
    out.update(fineweb_80_cold_s=80 * out["fineweb_shard_cold_s"], fineweb_80_warm_s=80 * out["fineweb_shard_warm_s"])
    return out


def index_section(env: dict, s: tg.Settings, report: dict) -> None:
    print(f"== the difficulty index over the embedded corpus ({s.train_seq_len + 1}-token rows), build rate per signal "
          f"(goal: the SCORES signals >= 100M tokens/s on 2 cores, the text signals >= 5M per process)")
    r = report["index_build"] = bench_index_build(env, s)
    print(f"  {cpu_line()}")
    print(f"  {r['rows']:,} rows, {r['tokens']:,} tokens, every signal but proxy_loss in {r['wall_s']:.1f} s with "
          f"{r['processes']} processes")
    print(f"  {'signal':<20}{'M tokens/s':>12}{'   FineWeb 8B tokens, hours: 2 cores':>38}{'16 cores':>10}")
    for row in r["signals"]:
        note = " (the model on every core; per process = all cores)" if row["signal"] == "proxy_loss" else ""
        print(f"  {row['signal']:<20}{row['tokens_per_s_per_process'] / 1e6:12.2f}{row['projected_hours_2_cores']:38.2f}"
              f"{row['projected_hours_16_cores']:10.2f}{note}")
    print("  (per process: one thread; the projection assumes one process per core, as --processes does, and a "
          "CPU like this one; the proxy loss on a GPU is far faster and not measured here)")
    reads = report["shard_reads"] = bench_shard_reads(s)
    print(f"== shards read with pread (a shard cut under a run is an error, not SIGBUS) against a memory map: "
          f"{reads['pread']:.3f} against {reads['memory map']:.3f} ms per shuffled micro-batch of "
          f"{s.micro_batch_seqs} rows, on the read-ahead thread (median of 6 alternating blocks)")
    h = report["content_hash"] = bench_content_hash(s)
    print("== the shards' content hash (index, sidecars, summary, the train/validation check; median of 3, the page "
          "cache dropped for cold)")
    print(f"  the embedded training set: {h['embedded_shards']} shards, {h['embedded_bytes'] / 2**20:.0f} MiB hashed "
          f"whole: {h['embedded_cold_s'] * 1000:.0f} ms cold, {h['embedded_warm_s'] * 1000:.0f} ms warm")
    print(f"  one shard of FineWeb's size ({h['fineweb_shard_bytes'] / 1e6:.0f} MB, 6 MiB sampled): "
          f"{h['fineweb_shard_cold_s'] * 1000:.1f} ms cold, {h['fineweb_shard_warm_s'] * 1000:.1f} ms warm; "
          f"80 shards: {h['fineweb_80_cold_s']:.2f} s cold, {h['fineweb_80_warm_s']:.2f} s warm (once a process)")


def bench_mix_work(s: tg.Settings, micro_batches: int = 4000, repeats: int = 5) -> dict:
    """MIX=adaptive's own work in one process, the loader left out: curriculum.mixing.AdaptiveMix
    observing a micro-batch's per-token loss and updating at its points, on the CPU configuration's
    shapes and three datasets. Best of `repeats` runs: the number the ops are capable of."""
    from curriculum.config import MixConfig
    from curriculum.mixing import AdaptiveMix, WeightSchedule
    g = torch.Generator().manual_seed(0)
    loss = torch.rand(s.micro_batch_seqs, s.train_seq_len, generator=g) * 6
    domains = torch.randint(0, 3, (s.micro_batch_seqs,), generator=g)
    best, updates = float("inf"), 0
    for _ in range(repeats):
        mix = AdaptiveMix(MixConfig(mode="adaptive"), ("code", "docs", "prose"), [1 / 3] * 3, None,
                          torch.device("cpu"), lag=1, schedule=WeightSchedule(), world_size=1)
        t0 = time.perf_counter()
        for micro in range(micro_batches):
            mix.observe(loss, domains)
            mix.at_micro_batch(micro, micro // s.grad_accum_steps)
        best = min(best, (time.perf_counter() - t0) / micro_batches)
        updates = mix.updates
    return dict(us_per_micro_batch=1e6 * best, micro_batches=micro_batches, updates=updates)


def trainer_cost(env: dict, args, s: tg.Settings) -> dict:
    """Section 7: the curriculum's cost as a user meets it, separate trainer processes in turns."""
    decompose = not args.no_decompose
    print(f"== train_gpt.py, configs/cpu.env: separate processes taking turns step by step, {args.steps} steps, "
          f"{args.repeats} rings (arms in a seeded order each){', with the decomposition' if decompose else ''}", flush=True)
    cost = bench_trainer_in_turns(env, args.steps, args.repeats, decompose,
                                  only=tuple(a for a in args.cost_arms.split(",") if a), rings_dir=args.rings_dir,
                                  layout=args.layout)
    print(f"  {cpu_line()}")
    print(f"  {'arm':<26}{'median ms':>10}{'ratio':>8}  {'95% CI, blocks':<17}{'95% CI, rings':<17}{'costs nothing':>14}"
          f"{'faults':>8}{'kernel ms':>10}{'data wait':>10}{'reader CPU':>11}{'peak MB':>8}  per ring")
    for name in cost["arms"]:
        r, l = cost["ratios"][name], cost["loader"][name]
        verdict = "" if name in REFERENCE else ("yes" if turns.costs_nothing(r) else "no")
        ci = "" if name == "baseline" else f"[{r['ratio_ci95'][0]:.3f}, {r['ratio_ci95'][1]:.3f}]"
        ring_ci = "" if name == "baseline" else f"[{r['ring_ci95'][0]:.3f}, {r['ring_ci95'][1]:.3f}]"
        print(f"  {name:<26}{r['median_ms']:10.1f}{r['ratio']:8.3f}  {ci:<17}{ring_ci:<17}{verdict:>14}{l['faults_per_step']:8.0f}"
              f"{l['kernel_ms_per_step']:10.1f}{l['data_wait_ms_per_step']:10.3f}{l['reader_cpu_ms_per_step']:11.3f}"
              f"{l['peak_memory_mb']:8.0f}  {' '.join(f'{x:.3f}' for x in r['per_ring'])}")
    print(f"  (ratio: against the two baseline processes' geometric mean, except baseline_again: against baseline, "
          f"the A/A control, the method's own error; geometric mean over blocks of {cost['block_rounds']} rounds, "
          f"every ring's blocks pooled, and over rings, one pair of processes each (a process's own speed counts "
          f"there only); layout: {cost['layout']}; "
          f"order_curriculum: against baseline_shuffled, its own baseline (the goal: a CI inside [0.99, 1.01]); "
          f"mix_adaptive and mix_replay: against mix_stratified, the same blend with fixed weights; "
          f"\"costs nothing\": both CIs hold 1.00 and lie inside [0.98, 1.02]; faults: minor page faults per step, "
          f"kernel ms: the process's system time per step, medians)")
    if "mix_adaptive_vs_replay" in cost["ratios"]:
        r = cost["ratios"]["mix_adaptive_vs_replay"]
        print(f"  mix_adaptive against mix_replay (the same batches, so the mixer's own sums, copies and updates; "
              f"the goal: <= 1.002): {r['ratio']:.4f} [{r['ratio_ci95'][0]:.4f}, {r['ratio_ci95'][1]:.4f}]  "
              f"per ring {' '.join(f'{x:.3f}' for x in r['per_ring'])}")
    if "mix_adaptive" in cost["arms"]:
        work = cost["mix_work"] = bench_mix_work(s)
        step_ms = cost["ratios"]["mix_stratified"]["median_ms"]
        per_step = work["us_per_micro_batch"] * s.grad_accum_steps / 1000
        print(f"  mix_adaptive's own work in one process (AdaptiveMix.observe and its updates, no loader): "
              f"{work['us_per_micro_batch']:.1f} us a micro-batch, {100 * per_step / step_ms:.3f}% of "
              f"mix_stratified's median step")
    if cost["flush_denormal_set"]:
        print(f"  flush-to-zero set in the ftz arms: {cost['flush_denormal_set']}")
    print(f"  torch.profiler, the last {PROFILED_STEPS} steps: self CPU ms per step, fresh against baseline "
          f"(largest differences)")
    for row in cost["profile"]:
        print(f"    {row['op'][:44]:<46}{row['base_ms']:9.2f}{row['arm_ms']:9.2f}{row['difference_ms']:+9.2f}")
    return cost


def gil_section(s: tg.Settings, report: dict) -> None:
    print("== the read-ahead thread's hold on the GIL: the main thread runs Python for 20 ms after each micro-batch "
          "while the next is prepared; its pauses over the floor (the loop with no data path) are what the thread "
          f"took from it ({cpu_line()})")
    report["gil"] = bench_gil(s)
    for row in report["gil"]:
        print(f"  {row['shapes']:<28} {row['arm']:<13} pauses {row['pauses_ms']:7.3f} ms/micro-batch, over the floor "
              f"{row['over_floor_ms']:7.3f}; the thread's CPU {row['reader_cpu_ms']:7.3f} ms/micro-batch")


def cpu_line() -> str:
    """The CPU's model and the flags that decide the trainer's kernels, for every figure printed."""
    flags = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    wanted = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return (f"CPU: {device_name(torch.device('cpu'))}, {os.cpu_count()} cores, flags {' '.join(wanted) or 'none of avx2/avx512'}"
            f", torch {torch.__version__}, ATEN_CPU_CAPABILITY={os.environ.get('ATEN_CPU_CAPABILITY', 'default')}"
            f", CPU_AUTOCAST={os.environ.get('CPU_AUTOCAST', 'auto')}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=40, help="timed steps per trainer process (section 7)")
    ap.add_argument("--repeats", type=int, default=3, help="rings of trainer processes (section 7)")
    ap.add_argument("--pairs", type=int, default=60, help="rounds of one step per arm in one process")
    ap.add_argument("--blocks", type=int, default=6, help="blocks of 10 steps per arm for the breakdown")
    ap.add_argument("--skip-trainer", action="store_true")
    ap.add_argument("--cost-only", action="store_true", help="only section 7: the trainer processes in turns")
    ap.add_argument("--no-decompose", action="store_true", help="section 7 with the four arms only, no controls")
    ap.add_argument("--cost-arms", default="", help="section 7: only these arms (comma-separated), with the baselines")
    ap.add_argument("--layout", choices=("fixed", "random"), default="fixed",
                    help="section 7: each trainer process laid out without address randomisation (fixed), or as the "
                    "system lays it out (random)")
    ap.add_argument("--rings-dir", type=Path, help="section 7: keep each ring here, and pool the rings kept there "
                    "before (the same arms, steps and CPU) with this run's")
    ap.add_argument("--replay", action="store_true", help="also time recorded baseline and curriculum batches replayed")
    ap.add_argument("--scorers-only", action="store_true", help="only the difficulty signals' throughput")
    ap.add_argument("--mask-only", action="store_true", help="only section 8: the document mask's step time")
    ap.add_argument("--index-only", action="store_true", help="only section 9: the difficulty index's build rates")
    ap.add_argument("--gil-only", action="store_true", help="only the read-ahead's hold on the main thread's GIL")
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    args = ap.parse_args(argv)
    try:  # a misspelt arm ends the bench here, not after the sections before the rings
        ring_arms(not args.no_decompose, tuple(a for a in args.cost_arms.split(",") if a))
    except ValueError as err:
        ap.error(str(err))
    env = read_env_file(ROOT / "configs" / "cpu.env")
    s = cpu_settings(env)
    device = tg.pick_device(s)
    report: dict = dict(device=str(device), torch=torch.__version__, cpu=cpu_line())
    if args.gil_only:
        gil_section(s, report)
        print("== the packing thread's torch ops beside the step's, one process (ms per main-thread step, median of "
              "blocks; ratio to no packing)")
        report["packing_interference"] = bench_packing_interference(s)
        for arm, r in report["packing_interference"].items():
            print(f"  {arm:<26} {r['ms']:8.2f} ms  {r['ratio']:.3f}")
        if args.json:
            args.json.write_text(json.dumps(report, indent=2) + "\n")
        return
    if args.cost_only or args.mask_only or args.index_only:
        if args.cost_only:
            report["trainer_in_turns"] = trainer_cost(env, args, s)
        elif args.mask_only:
            mask_section(s, args.pairs, report)
        else:
            index_section(env, s, report)
        if args.json:
            args.json.write_text(json.dumps(report, indent=2) + "\n")
        return

    print("== each difficulty signal alone, one CPU thread (best of 30, tokens/s; goal >= 300M)")
    report["scorer"] = bench_scorer(s)
    for row in report["scorer"]:
        print(f"  {row['score']:<25} vocab {row['vocab']:<5} {row['shapes']:<40} {row['tokens_per_s'] / 1e6:8.2f}M tokens/s")
    if args.scorers_only:
        return
    print(f"== documents of the embedded corpus spanned by one micro-batch of {s.train_seq_len}-token rows "
          f"(median; share spanning one document)")
    report["documents_per_batch"] = bench_documents_per_batch(s)
    for row in report["documents_per_batch"]:
        print(f"  DATA_ORDER={row['order']:<11} {row['rows']:<15} {row['sequences']:>3} rows  median {row['median']:6.1f}"
              f"  one document {100 * row['one_document']:5.1f}%")
    print("== DATA_LAYOUT=packed: documents, pieces and cu_seqlens boundaries per micro-batch (records compile 256)")
    report["packed_batches"] = bench_packed_batches(s)
    for row in report["packed_batches"]:
        print(f"  {row['shapes']:<40} {row['arm']:<12} documents {row['documents_per_batch']:7.1f}  pieces "
              f"{row['pieces_per_batch']:7.1f}  boundaries max {row['boundaries_max']:>4}  over 256: "
              f"{row['batches_over_256']}/{row['batches']}")
    print(f"== loader alone on {device} (best of 3, ms per micro-batch)")
    report["loader"] = bench_loader(s, device)
    for row in report["loader"]:
        ms, ratio = row["ms"], row["ratio"]
        print(f"  {row['shapes']:<28} baseline {ms['baseline']:8.3f}  fresh {ms['fresh']:8.3f} ({ratio['fresh']:.3f})"
              f"  carry {ms['carry']:8.3f} ({ratio['carry']:.3f})")
    gil_section(s, report)
    print(f"== paired steps in one process, configs/cpu.env, {args.pairs} rounds (median ms per step; "
          f"ratio to the baseline, goal <= 1.01; the experiment we beat: 1.089)")
    paired = report["paired_steps"] = bench_paired_steps(s, args.pairs)
    print(f"  baseline {paired['median_ms']['baseline']:.2f}")
    for arm, r in paired["against_baseline"].items():
        print(f"  {arm:<8} {paired['median_ms'][arm]:.2f}  ratio {r['ratio']:.4f}  "
              f"95% CI [{r['ratio_ci95'][0]:.4f}, {r['ratio_ci95'][1]:.4f}]")
    print(f"== where a step goes, {args.blocks} blocks of 10 steps per arm, one loader alive at a time (mean ms per step)")
    parts = report["step_breakdown"] = bench_step_breakdown(s, args.blocks)
    base = parts["baseline"]
    print(f"  {'arm':<9}{'step':>9}{'next_batch':>12}{'the rest':>10}{'reader CPU':>12}   difference from the baseline")
    for arm, p in parts.items():
        diff = "" if arm == "baseline" else (
            f"   step {p['step_ms'] - base['step_ms']:+.2f} = next_batch {p['batch_ms'] - base['batch_ms']:+.2f}"
            f" + rest {p['rest_ms'] - base['rest_ms']:+.2f}; reader {p['reader_cpu_ms'] - base['reader_cpu_ms']:+.2f}; "
            f"step ratio {p['step_vs_baseline']['ratio']:.3f} [{p['step_vs_baseline']['ratio_ci95'][0]:.3f}, "
            f"{p['step_vs_baseline']['ratio_ci95'][1]:.3f}]")
        print(f"  {arm:<9}{p['step_ms']:9.2f}{p['batch_ms']:12.3f}{p['rest_ms']:10.2f}{p['reader_cpu_ms']:12.3f}{diff}")
    print("  (the model's work is the same in every arm: a difference in the rest outside its CI would be "
          "interference; next_batch and the reader's CPU time are the curriculum's own cost)")
    if args.replay:
        print(f"== recorded batches replayed with no loader alive, {args.blocks} blocks of 10 steps per arm (mean ms per step)")
        replay = report["replay"] = bench_replay(s, args.blocks)
        r = replay["fresh_vs_baseline"]
        print(f"  baseline's batches {replay['ms']['baseline']:.2f}  the curriculum's {replay['ms']['fresh']:.2f}  "
              f"ratio {r['ratio']:.3f} [{r['ratio_ci95'][0]:.3f}, {r['ratio_ci95'][1]:.3f}]")
    print("== evaluation of the validation split, configs/cpu.env's model (seconds per pass)")
    report["eval_strides"] = bench_eval_strides(s)
    for row in report["eval_strides"]:
        kind = "non-overlapping" if row["stride"] == s.train_seq_len else f"sliding, stride {row['stride']}"
        print(f"  {kind:<28} {row['seconds']:8.2f}s  ratio {row['ratio']:.2f}  ({row['tokens']:,} tokens)")
    mask_section(s, args.pairs, report)
    index_section(env, s, report)
    if not args.skip_trainer:
        report["trainer_in_turns"] = trainer_cost(env, args, s)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
