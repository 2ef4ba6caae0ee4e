"""curriculum/documents.py: pieces cut at every BOS and every max_len tokens, cu_seqlens padded to
the bucket, the record's packed batch (true next tokens), the curriculum's pieces chosen around
its target, and shards that hold no documents refused."""
from __future__ import annotations

import numpy as np

from curriculum.documents import (Piece, check_document_shards, cu_seqlens, document_pieces, pack_record_batch,
                                  select_pieces)
from curriculum.readers.documents import DocumentStream
from curriculum.shards import BOS_ID, write_shard


def test_pieces_begin_at_zero_at_every_document_and_every_max_len_tokens():
    assert document_pieces(np.asarray([0, 5]), 12, 4).tolist() == [0, 4, 5, 9]
    assert document_pieces(np.asarray([3]), 8, 100).tolist() == [0, 3]  # a first piece before the first BOS
    assert document_pieces(np.asarray([], dtype=np.int64), 10, 4).tolist() == [0, 4, 8]
    cu, longest = cu_seqlens(np.asarray([0, 5]), 12, 4, bucket=8)
    assert cu.tolist() == [0, 4, 5, 9, 12, 12, 12, 12] and cu.dtype == np.int32 and longest == 4


def test_the_record_batch_is_its_span_with_the_next_token_as_target(tmp_path):
    tokens = np.concatenate([[BOS_ID], np.arange(2, 30), [BOS_ID], np.arange(40, 90)])
    path = tmp_path / "d_train_000000.bin"
    write_shard(path, tokens)
    batch = pack_record_batch(DocumentStream([path], 0, 1), 60, 16, 8)
    assert np.array_equal(batch.inputs, tokens[:60]) and np.array_equal(batch.targets, tokens[1:61])
    assert batch.documents == 2 and batch.cu_seqlens[:batch.pieces + 1].tolist() == [0, 16, 29, 45, 60]
    assert batch.max_seqlen == 16 and len(batch.cu_seqlens) % 8 == 0


def test_shards_without_documents_are_refused_before_any_batch(tmp_path):
    empty, no_bos, fine = (tmp_path / f"{x}_train_000000.bin" for x in ("empty", "nobos", "fine"))
    write_shard(empty, np.zeros(0, dtype=np.uint16))
    write_shard(no_bos, np.full(50, 7))
    write_shard(fine, np.concatenate([[BOS_ID], np.arange(2, 50)]))
    problems = check_document_shards([empty, no_bos, fine])
    assert len(problems) == 2 and "empty_train_000000.bin: holds no tokens" in problems[0]
    assert "nobos_train_000000.bin: no BOS (id 1) in its first 50 tokens" in problems[1]


def test_long_documents_are_cut_every_max_len_tokens():
    assert document_pieces(np.array([5, 300]), 400, 128).tolist() == [0, 5, 133, 261, 300]
    assert document_pieces(np.array([0]), 10, 4).tolist() == [0, 4, 8]
    assert document_pieces(np.array([], dtype=np.int64), 3, 4).tolist() == [0]


def pieces_of(lengths, scores):
    return [Piece(np.arange(n + 1, dtype=np.uint16) + 10 * i, 0, s) for i, (n, s) in enumerate(zip(lengths, scores))]


def test_select_pieces_packs_the_window_centred_on_the_target_and_cuts_the_last():
    pool = pieces_of([10, 10, 10, 10], [3.0, 0.0, 2.0, 1.0])  # rank order: 1, 3, 2, 0
    kept, cut, rest = select_pieces(pool, 15, 0.0)
    assert [int(p.tokens[0]) for p in kept] == [10, 30] and [len(p.tokens) - 1 for p in kept] == [10, 5]
    assert len(cut.tokens) - 1 == 5 and int(cut.tokens[0]) == 35 and len(rest) == 2
    kept, _, _ = select_pieces(pool, 15, 1.0)  # the hardest: start at token 25 of 40 in rank order -> piece 2 then 0
    assert [int(p.tokens[0]) for p in kept] == [0, 20]
    assert sum(len(p.tokens) - 1 for p in kept) == 15
