"""The readers: rows of seq_len + 1 tokens from the training shards, each rank its disjoint share.

One module per reader, all with the `Reader` protocol and one state idiom (readers/base.py):

- `sequential.py`: the challenge's order, the next span of the stream;
- `shuffled.py`: a seeded permutation of fixed slots per pass (curriculum/order.py);
- `aligned.py`: `DATA_ALIGN=bos`, rows that begin at a document (its `RowTable`);
- `mixed.py`: several datasets blended row by row (curriculum/blend.py);
- `index_order.py`: `DATA_ORDER=curriculum`, whole rows drawn from the difficulty index;
- `documents.py`: the late records' document stream (`DATA_LAYOUT=packed`).

`open_reader` picks one for a run's settings; each module is imported only when a run reads
that way, so a run's artifact counts only the readers it uses.
"""
from __future__ import annotations

from pathlib import Path

from ..shards import DataError
from .base import DataEvent, DataExhausted, Mixture, Reader, ReaderBase, Taken

__all__ = ["DataError", "DataEvent", "DataExhausted", "Mixture", "Reader", "ReaderBase", "Taken", "open_reader"]


def open_reader(files: list[Path] | None, mixture, seq_len: int, rank: int, world_size: int,
                order: str, seed: int, align: str = "none", doc_max: int = 0, dataset: str | None = None,
                index_order=None, natural: bool = False, schedule=None) -> Reader:
    """The reader for a run: the mixture's datasets blended (a `Mixture`), or the
    training shards in `order`, as contiguous spans or (`align="bos"`) rows that begin at a
    document. `index_order` is DATA_ORDER=curriculum's (OrderConfig, ProgressFeed, and the plan's
    `index(seq_len, signal, files)` that opens the difficulty index once)."""
    if order == "curriculum":
        if mixture is not None:
            raise DataError("DATA_ORDER=curriculum reads one training set's index; a phases file's mixture of datasets "
                            "cannot use it (use DATA_ORDER=shuffled there)")
        from .index_order import CurriculumRows
        config, feed, open_index = index_order
        return CurriculumRows(list(files), seq_len, rank, world_size, seed, align, doc_max, config, feed, open_index,
                              dataset)
    if mixture is not None:
        from .mixed import MixedRows
        readers = [open_reader(list(files), None, seq_len, rank, world_size, order, seed + i, align, doc_max, name)
                   for i, (name, files) in enumerate(zip(mixture.names, mixture.files))]  # each its own order
        return MixedRows(readers, mixture, world_size, seed, natural, schedule)
    if align == "bos":
        from .aligned import AlignedRows
        return AlignedRows(list(files), seq_len, rank, world_size, order, seed, doc_max, dataset)
    if order == "shuffled":
        from .shuffled import ShuffledRows
        return ShuffledRows(list(files), seq_len, rank, world_size, seed, dataset)
    from .sequential import SequentialRows
    return SequentialRows(list(files), seq_len, rank, world_size, dataset)
