"""curriculum/readers/base.py: the contract every reader keeps, checked on each of them: the
Reader protocol's names, one state idiom (a frozen dataclass, as a dict) that goes on exactly
where it stood, events handed out once, and a new sequence length taken from a saved state."""
from __future__ import annotations

import dataclasses
import glob

import numpy as np
import pytest

from curriculum.readers import open_reader
from curriculum.readers.base import DataEvent, DatasetReader, Mixture, Reader, ReaderBase

T = 32
READERS = {
    "sequential": dict(order="sequential"),
    "shuffled": dict(order="shuffled"),
    "aligned": dict(order="shuffled", align="bos"),
    "mixed": dict(order="shuffled", mixed=True),
}


def files_of(dataset, name: str) -> list[str]:
    return sorted(glob.glob(dataset["folders"][f"embedded_{name}_sp1024"] + "/*train_*.bin"))


def reader(dataset, kind: str, seq_len: int = T, rank: int = 0, world: int = 2):
    spec = READERS[kind]
    mixture = None
    if spec.get("mixed"):
        names = ("docs", "code")
        mixture = Mixture(names, tuple(tuple(files_of(dataset, n)) for n in names), ("wrap", "wrap"), (0.7, 0.3))
    return open_reader(None if mixture else files_of(dataset, "docs"), mixture, seq_len, rank, world, spec["order"], 7,
                       spec.get("align", "none"))


@pytest.mark.parametrize("kind", READERS)
def test_every_reader_has_the_protocol_s_names_and_a_frozen_dataclass_state(dataset, kind):
    r = reader(dataset, kind)
    names = {n for n in vars(Reader) if not n.startswith("_")} | set(Reader.__annotations__)
    if kind != "mixed":  # a mixture blends readers of one dataset each, which say what fits in their pass
        names |= {n for n in vars(DatasetReader) if not n.startswith("_")}
    assert {"take", "state_dict", "total_tokens"} <= names
    for name in names:
        assert hasattr(r, name), f"{type(r).__name__} lacks {name}"
    assert isinstance(r, ReaderBase) and dataclasses.is_dataclass(r.State) and r.State.__dataclass_params__.frozen
    assert set(r.state_dict()) == {f.name for f in dataclasses.fields(r.State)}


@pytest.mark.parametrize("kind", READERS)
def test_a_saved_state_goes_on_exactly_where_the_reader_stood(dataset, kind):
    first = reader(dataset, kind)
    for _ in range(5):
        first.take(6)
    saved = first.state_dict()
    ahead = [first.take(6) for _ in range(4)]
    second = reader(dataset, kind)
    second.take(3)  # somewhere else first: the state, not the construction, decides
    second.load_state_dict(saved)
    for (rows, positions, ids), (again, positions_again, ids_again) in zip(ahead, [second.take(6) for _ in range(4)]):
        assert np.array_equal(rows, again) and np.array_equal(positions, positions_again)
        assert (ids is None and ids_again is None) or np.array_equal(ids, ids_again)
    assert second.state_dict() == first.state_dict()


@pytest.mark.parametrize("kind", ["sequential", "shuffled", "aligned"])
def test_a_new_sequence_length_starts_from_a_saved_state(dataset, kind):
    r = reader(dataset, kind)
    r.take(4)
    longer = r.reshaped(r.state_dict(), 2 * T)
    assert longer["seq_len"] == 2 * T
    other = reader(dataset, kind, seq_len=2 * T)
    other.load_state_dict(longer)
    rows, _, _ = other.take(3)
    assert rows.shape == (3, 2 * T + 1)


def test_events_are_handed_out_once_and_say_what_happened(tmp_path):
    from curriculum.shards import write_shard
    path = tmp_path / "t_train_000000.bin"
    write_shard(path, np.arange(1, 200, dtype=np.uint16))
    r = open_reader([path], None, 8, 0, 1, "sequential", 0)
    for _ in range(7):
        r.take(4)  # 199 tokens hold six takes of four 8-token rows (32 tokens each, one more at the end): the 7th wraps
    events = r.new_events()
    assert [e.kind for e in events] == ["wrap"] and events[0].passes == 2 and r.new_events() == []  # pass 2 begins
    assert "the training stream started over" in events[0].line(12)
    drop = DataEvent("drop", "code", mixture="docs=1.00")
    assert str(drop) == "drop dataset:code (used up) mixture:docs=1.00" and drop.line(3).endswith("step:3")
