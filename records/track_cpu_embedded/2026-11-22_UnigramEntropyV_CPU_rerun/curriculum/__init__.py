"""Online data curriculum for Parameter Golf: score a pool of sequences on the device and keep
the window of difficulty ranks a schedule over training progress asks for.

Pure pieces: `scores` (difficulty signals), `schedules` (where to aim over training),
`selection` (which ranks to keep), `config` (settings and their rules). The trainer meets it
at one seam, `loader.BatchSource.next_batch`, the only place with I/O and threads.
"""
from .config import CurriculumConfig
from .loader import BatchSource, TokenStream
from .schedules import SCHEDULE_PARAMETERS, SCHEDULES, target_percentile, v_schedule
from .scores import SCORES, unigram_entropy
from .selection import select_window, window_start
from .shards import ShardFormatError, open_shard, shard_token_count, shards_fingerprint, write_atomic, write_shard

__all__ = [
    "BatchSource", "CurriculumConfig", "SCHEDULE_PARAMETERS", "SCHEDULES", "SCORES", "ShardFormatError", "TokenStream",
    "open_shard", "select_window", "shard_token_count", "shards_fingerprint", "target_percentile", "unigram_entropy",
    "v_schedule", "window_start", "write_atomic", "write_shard",
]
