"""Online data curriculum for Parameter Golf: score a pool of sequences on the device and keep
the window of difficulty ranks a schedule over training progress asks for.

Pure pieces: `scores` (difficulty signals), `schedules` (where to aim over training),
`selection` (which ranks to keep), `pool` (fresh or carried over), `order` (which slots a
shuffled pass visits), `config` (settings and their rules), `phases` (a run in stages). The
data path's stages are `readers/` (one module per reader), `read_ahead` (the one thread),
`selector` and `statistics`; `loader.BatchSource` composes them behind the `loader.DataPath` protocol, the one
seam a trainer meets: `next_batch(Position)`, `drain_log`, `summary`, `state_dict`,
`load_state_dict`, `close`. `shards` and `domains` read and write the files.
"""
# Each name is imported from its module on first use (PEP 562), so that importing one part of the
# package (the plugin, say) imports only what that part needs.
_MODULE_OF = dict(
    BOS_ID="shards", CurriculumConfig="config", DomainIndex="domains", write_sidecar="domains", DATA_ORDERS="order",
    BatchSource="loader", DataError="loader", DataExhausted="loader", DataPath="loader", Mixture="loader",
    Position="loader", TokenStream="readers.sequential", POOLS="pool", SCHEDULE_PARAMETERS="schedules", SCHEDULES="schedules",
    target_percentile="schedules", v_schedule="schedules", SCORES="scores", unigram_entropy="scores",
    select_window="selection", split_window="selection", window_start="selection", ShardFormatError="shards",
    open_shard="shards", shard_token_count="shards", shards_fingerprint="shards", shard_content_hash="shards", unigram_counts="shards",
    write_atomic="shards", write_shard="shards", DataPlan="plan", Shape="config", open_data_path="plan",
    read_data_plan="plan")
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib
    value = getattr(importlib.import_module(f".{_MODULE_OF[name]}", __name__), name)
    globals()[name] = value
    return value
