"""curriculum/readers/aligned.py's DATA_ALIGN=bos: rows that begin at a document, built from real text."""
from __future__ import annotations

import glob

import numpy as np
import pytest

from curriculum import open_shard, write_shard
from curriculum.readers.aligned import AlignedRows, RowTable, row_table
from curriculum.shards import BOS_ID


def real_documents(dataset, lengths: list[int]) -> list[np.ndarray]:
    """Documents of the given lengths (BOS included), cut from the corpus's real documents."""
    tokens = np.asarray(open_shard(sorted(glob.glob(dataset["data_path"] + "/*train_*.bin"))[0]))
    starts = np.flatnonzero(tokens == BOS_ID)
    docs = [tokens[a:b] for a, b in zip(starts, np.append(starts[1:], len(tokens)))]
    long = [d for d in docs if len(d) >= max(lengths)]
    return [long[i][:n] for i, n in enumerate(lengths)]


def shard_of(tmp_path, name: str, docs: list[np.ndarray], head: int = 0):
    """A shard holding the documents in order, after `head` tokens that belong to no document."""
    body = np.concatenate([np.full(head, 7)] + list(docs)).astype(np.uint16)
    path = tmp_path / f"{name}_train_000000.bin"
    write_shard(path, body)
    return path


def test_rows_hold_whole_documents_cut_where_the_rules_say_and_every_token_is_counted(dataset, tmp_path):
    lengths = [3, 2, 9, 4, 4, 1, 6, 2]
    docs = real_documents(dataset, lengths)
    path = shard_of(tmp_path, "a", docs, head=2)
    table = RowTable.build([open_shard(path)], seq_len=5, doc_max=5)  # rows of 6 tokens, documents cut at 5
    rows = [table.row([open_shard(path)], r).tolist() for r in range(table.rows)]
    d = [doc.tolist() for doc in docs]
    # by hand: row 1 = doc0 (3) + doc1 (2) + doc2's first token (its cut at 5, then the row's end);
    # row 2 = doc3 (4) + doc4's first 2; row 3 = doc5 (1) + doc6 cut at 5; doc7 (2) cannot fill a row
    assert rows == [d[0] + d[1] + d[2][:1], d[3] + d[4][:2], d[5] + d[6][:5]]
    assert all(r[0] == BOS_ID for r in rows)
    assert table.row_documents.tolist() == [3, 2, 2]
    assert table.skipped == dict(cut=9 - 5 + 6 - 5, row_end=(5 - 1) + (4 - 2), shard_ends=2 + 2)
    assert table.rows * 6 + sum(table.skipped.values()) == 2 + sum(lengths)
    assert table.row_skipped.tolist() == [8, 2, 1] and table.row_skipped.sum() == table.skipped["cut"] + table.skipped["row_end"]
    assert table.row_start.tolist() == [2, 2 + 3 + 2 + 9, 2 + 3 + 2 + 9 + 4 + 4]


def test_no_document_is_in_two_rows_and_each_row_starts_one_on_the_real_corpus(dataset):
    files = tuple(sorted(glob.glob(dataset["data_path"] + "/*train_*.bin")))
    for doc_max in (0, 40):
        table = row_table(files, 64, doc_max)
        shards = [open_shard(f) for f in files]
        firsts = set()
        for r in range(0, table.rows, 37):
            row = table.row(shards, r)
            assert len(row) == 65 and row[0] == BOS_ID
            a, b = table.first_segment[r], table.first_segment[r + 1]
            assert (table.seg_length[a:b] <= (doc_max or 65)).all()
            firsts.update(zip([int(table.row_shard[r])] * int(b - a), table.seg_start[a:b].tolist()))
        assert len(firsts) == sum(int(table.first_segment[r + 1] - table.first_segment[r]) for r in range(0, table.rows, 37))
        assert table.rows * 65 + sum(table.skipped.values()) == sum(len(t) for t in shards)


@pytest.mark.parametrize("order", ["sequential", "shuffled"])
def test_ranks_read_disjoint_aligned_rows_every_row_once_a_pass_in_a_seeded_order(dataset, order):
    files = sorted(glob.glob(dataset["folders"]["embedded_docs_sp1024"] + "/*train_*.bin"))
    readers = [AlignedRows(files, 64, rank, 2, order, seed=5, doc_max=0) for rank in (0, 1)]
    rows_per_pass = readers[0].table.rows
    seen = [[], []]
    while readers[0].passes == 0 and len(seen[0]) < rows_per_pass:
        for rank, reader in enumerate(readers):
            if not reader.fits_in_pass(8):
                break
            rows, positions, _ = reader.take(8)
            assert (rows[:, 0] == BOS_ID).all()
            seen[rank] += positions.tolist()
        else:
            continue
        break
    assert not set(seen[0]) & set(seen[1]) and len(set(seen[0])) == len(seen[0])
    again = AlignedRows(files, 64, 0, 2, order, seed=5, doc_max=0)
    assert again.take(8)[1].tolist() == seen[0][:8]
    other_seed = AlignedRows(files, 64, 0, 2, order, seed=6, doc_max=0).take(8)[1].tolist()
    assert (other_seed == seen[0][:8]) == (order == "sequential")
    assert (seen[0][:8] == sorted(seen[0][:8])) == (order == "sequential")
