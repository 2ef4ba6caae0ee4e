"""curriculum/domains.py: sidecars, the stream's domain index, documents per batch."""
from __future__ import annotations

import glob
import json
from pathlib import Path

import numpy as np
import pytest

from curriculum import DomainIndex, open_shard, shard_content_hash, write_shard
from curriculum.domains import mix_text, sidecar_path, write_sidecar


def brute_domain(starts: list[int], ids: list[int], position: int) -> int:
    return [d for s, d in zip(starts, ids) if s <= position][-1]


def test_the_index_joins_shards_and_answers_like_a_scan(tmp_path):
    tokens = np.arange(100, dtype=np.uint16)
    shards = []
    for i, (lo, hi, starts, ids) in enumerate([(0, 40, [0, 10, 25], [0, 1, 0]), (40, 100, [0, 5, 30], [0, 2, 1])]):
        path = tmp_path / f"x_train_{i:06d}.bin"
        write_shard(path, tokens[lo:hi])
        write_sidecar(path, np.asarray(starts), np.asarray(ids), ["docs", "prose", "code"])
        shards.append(path)
    index = DomainIndex.from_shards(shards, [40, 60])
    assert index.names == ("docs", "prose", "code") and index.total_tokens == 100
    flat_starts, flat_ids = [0, 10, 25, 40, 45, 70], [0, 1, 0, 0, 2, 1]
    positions = np.arange(0, 250, 7)
    assert index.domains_at(positions).tolist() == [brute_domain(flat_starts, flat_ids, p % 100) for p in positions]
    # rows [p, p + 20): the documents they touch, counted by a scan over every token
    for rows in ([0], [0, 30], [38, 95], [95], [5, 41, 60, 85]):
        docs = {brute_domain(flat_starts, list(range(6)), (p + k) % 100) for p in rows for k in range(20)}
        assert index.documents_spanned(np.asarray(rows), 20) == len(docs)
    assert mix_text(index.names, np.asarray([2, 1, 1])) == "docs=0.500,prose=0.250,code=0.250"
    # a document that runs on into the next shard is one document, not two
    write_sidecar(shards[1], np.asarray([0, 5, 30]), np.asarray([0, 2, 1]), ["docs", "prose", "code"], continues=True)
    joined = DomainIndex.from_shards(shards, [40, 60])
    assert joined.starts.tolist() == [0, 10, 25, 45, 70] and joined.documents_spanned(np.asarray([30]), 12) == 1


def test_no_index_unless_every_shard_has_a_sidecar_with_the_same_names(tmp_path):
    paths = []
    for i in range(2):
        paths.append(tmp_path / f"y_train_{i:06d}.bin")
        write_shard(paths[-1], np.arange(10, dtype=np.uint16))
    write_sidecar(paths[0], np.asarray([0]), np.asarray([0]), ["docs"])
    assert DomainIndex.from_shards(paths, [10, 10]) is None
    write_sidecar(paths[1], np.asarray([0]), np.asarray([0]), ["prose"])
    assert DomainIndex.from_shards(paths, [10, 10]) is None
    with pytest.raises(ValueError, match="begin at 0 and ascend"):
        write_sidecar(paths[0], np.asarray([0, 0]), np.asarray([0, 0]), ["docs"])
    with pytest.raises(ValueError, match="no name"):
        write_sidecar(paths[0], np.asarray([0]), np.asarray([3]), ["docs"])


def test_make_data_writes_sidecars_that_match_the_per_domain_datasets(dataset):
    """Every document of the mixed training split, found by its BOS, has the domain the
    sidecars give it; and the mix's domain totals equal the per-domain datasets' sizes."""
    mix = Path(dataset["data_path"])
    manifest = json.loads((mix / "manifest.json").read_text())
    shards = sorted(glob.glob(str(mix / "*train_*.bin")))
    assert all(sidecar_path(s).is_file() for s in shards)
    lengths = [len(open_shard(s)) for s in shards]
    index = DomainIndex.from_shards(shards, lengths)
    assert list(index.names) == manifest["domains"]
    stream = np.concatenate([np.asarray(open_shard(s)) for s in shards])
    bos = np.flatnonzero(stream == manifest["bos_id"])
    assert np.array_equal(np.unique(index.starts), bos)  # each document begins with its BOS
    per_domain = np.bincount(index.domains_at(np.arange(len(stream))), minlength=len(index.names))
    for name, tokens in zip(index.names, per_domain.tolist()):
        domain = json.loads((Path(dataset["folders"][f"embedded_{name}_sp1024"]) / "manifest.json").read_text())
        assert domain["splits"]["train"]["tokens"] == tokens, name


def _raw_sidecar(shard, **fields):
    """A sidecar written by hand, as a damaged or foreign one would be."""
    base = dict(starts=np.asarray([0, 4], dtype=np.int64), domain_ids=np.asarray([0, 1], dtype=np.uint8),
                domain_names=np.asarray(["docs", "prose"]), continues=False, shard_content=shard_content_hash(shard))
    np.savez(sidecar_path(shard), **{k: v for k, v in (base | fields).items() if v is not None})  # the name ends in .npz, so numpy keeps it


@pytest.mark.parametrize("damage, message", [
    ("random", "not a readable domains sidecar"),
    ("truncated", "not a readable domains sidecar"),
    ("missing", "missing domain_ids"),
    ("order", "start 2 is 3 after 6"),
    ("past_end", "past the shard's 10 tokens"),
    ("id", "domain id 5 has no name"),
    ("names", "distinct and not empty"),
    ("shape", "1-D of one length"),
    ("shard_changed", "another version of"),
    ("no_hash", "holds no hash of its shard's content"),
])
def test_a_damaged_sidecar_is_named_with_what_is_wrong(tmp_path, damage, message):
    from curriculum.domains import SidecarError
    shard = tmp_path / "z_train_000000.bin"
    write_shard(shard, np.arange(10, dtype=np.uint16))
    path = sidecar_path(shard)
    if damage == "random":
        path.write_bytes(np.random.default_rng(0).bytes(300))
    elif damage == "truncated":
        write_sidecar(shard, np.asarray([0, 4]), np.asarray([0, 1]), ["docs", "prose"])
        path.write_bytes(path.read_bytes()[:120])
    elif damage == "missing":
        np.savez(path, starts=np.asarray([0]), domain_names=np.asarray(["docs"]), continues=False)
    elif damage == "order":
        _raw_sidecar(shard, starts=np.asarray([0, 6, 3]), domain_ids=np.asarray([0, 1, 0], dtype=np.uint8))
    elif damage == "past_end":
        _raw_sidecar(shard, starts=np.asarray([0, 12]))
    elif damage == "id":
        _raw_sidecar(shard, domain_ids=np.asarray([0, 5], dtype=np.uint8))
    elif damage == "names":
        _raw_sidecar(shard, domain_names=np.asarray(["docs", "docs"]))
    elif damage == "shape":
        _raw_sidecar(shard, domain_ids=np.asarray([0], dtype=np.uint8))
    elif damage == "no_hash":  # a valid sidecar but for the hash: it could be any shard's
        _raw_sidecar(shard, shard_content=None)
    elif damage == "shard_changed":
        write_sidecar(shard, np.asarray([0, 4]), np.asarray([0, 1]), ["docs", "prose"])
        write_shard(shard, np.arange(10, 20, dtype=np.uint16))
    with pytest.raises(SidecarError, match=message) as err:
        DomainIndex.from_shards([shard], [10])
    assert str(path) in str(err.value)


def test_shards_naming_other_domains_say_why_no_mix_is_reported(tmp_path):
    paths = []
    for i, names in enumerate((["docs"], ["prose"])):
        paths.append(tmp_path / f"w_train_{i:06d}.bin")
        write_shard(paths[-1], np.arange(10, dtype=np.uint16))
        write_sidecar(paths[-1], np.asarray([0]), np.asarray([0]), names)
    notes = []
    assert DomainIndex.from_shards(paths, [10, 10], notes) is None
    assert "names the domains docs" in notes[0] and "names prose" in notes[0]
    sidecar_path(paths[1]).unlink()
    notes = []
    assert DomainIndex.from_shards(paths, [10, 10], notes) is None
    assert "1 of 2 shards have no sidecar" in notes[0]
