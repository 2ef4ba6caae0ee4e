"""Online data curriculum for Parameter Golf: score a pool of sequences on the device and keep
the window of difficulty ranks a schedule over training progress asks for.

Pure pieces: `scores` (difficulty signals), `schedules` (where to aim over training),
`selection` (which ranks to keep), `pool` (fresh or carried over), `order` (which slots a
shuffled pass visits), `config` (settings and their rules), `phases` (a run in stages). The
data path's stages are `rows` (readers), `read_ahead` (the one thread), `selector` and
`statistics`; `loader.BatchSource` composes them behind the `loader.DataPath` protocol, the one
seam a trainer meets: `next_batch(Position)`, `drain_log`, `summary`, `state_dict`,
`load_state_dict`, `close`. `shards` and `domains` read and write the files.
"""
from .config import CurriculumConfig
from .domains import DomainIndex, write_sidecar
from .loader import DATA_ORDERS, BatchSource, DataError, DataExhausted, DataPath, Mixture, Position
from .rows import TokenStream
from .pool import POOLS
from .schedules import SCHEDULE_PARAMETERS, SCHEDULES, target_percentile, v_schedule
from .scores import SCORES, unigram_entropy
from .selection import select_window, split_window, window_start
from .shards import (ShardFormatError, open_shard, shard_token_count, shards_fingerprint, unigram_counts, write_atomic,
                     write_shard)

__all__ = [
    "DATA_ORDERS", "DataExhausted", "DataPath", "Position", "Mixture", "POOLS", "DomainIndex", "split_window", "write_sidecar", "BatchSource", "CurriculumConfig", "DataError", "SCHEDULE_PARAMETERS", "SCHEDULES", "SCORES", "ShardFormatError", "TokenStream",
    "open_shard", "select_window", "shard_token_count", "shards_fingerprint", "target_percentile", "unigram_entropy",
    "unigram_counts", "v_schedule", "window_start", "write_atomic", "write_shard",
]
