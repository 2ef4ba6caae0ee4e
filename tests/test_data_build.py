"""data/build.py and data/sources.py: determinism, the split, the tokenizer's inputs, the manifest."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import data.build as build_mod
from curriculum import open_shard, shard_token_count
from data.build import BuildConfig, build, is_validation
from data.sources import SOURCES, dictionary_pages, jargon_entries, texinfo_sections

SMALL = BuildConfig(vocab_size=512, max_docs=25, shard_tokens=20_000, val_fraction=0.2, tokenizer_lines=5000)


def docs_in(folder: Path, split: str) -> list[bytes]:
    """Documents of a split as raw token bytes, cut at every BOS."""
    tokens = np.concatenate([np.asarray(open_shard(p)) for p in sorted(folder.glob(f"*_{split}_*.bin"))])
    starts = np.flatnonzero(tokens == 1).tolist() + [len(tokens)]
    return [tokens[a:b].tobytes() for a, b in zip(starts, starts[1:])]


@pytest.fixture(scope="module")
def small_build(tmp_path_factory):
    out = tmp_path_factory.mktemp("small")
    seen = []
    real = build_mod.train_tokenizer

    def spy(cfg, train_docs):
        seen.extend(train_docs)
        return real(cfg, train_docs)
    build_mod.train_tokenizer = spy
    try:
        folders = build(SMALL, out, log=lambda m: None)
    finally:
        build_mod.train_tokenizer = real
    return out, folders, seen


def test_building_twice_gives_the_same_manifest_and_shards(small_build, tmp_path):
    out, folders, _ = small_build
    again = build(SMALL, tmp_path, force=True, log=lambda m: None)
    for name, folder in folders.items():
        a = (folder / "manifest.json").read_text()
        assert a == (again[name] / "manifest.json").read_text()
        for shard in json.loads(a)["splits"]["train"]["shards"]:
            assert (folder / shard["file"]).read_bytes() == (again[name] / shard["file"]).read_bytes()


def test_an_up_to_date_build_is_skipped(small_build):
    out, folders, _ = small_build
    mix = next(f for n, f in folders.items() if "_mix_" in n)
    before = {p: p.stat().st_mtime_ns for p in mix.iterdir()}
    lines = []
    build(SMALL, out, log=lines.append)
    assert "up to date" in lines[0]
    assert {p: p.stat().st_mtime_ns for p in mix.iterdir()} == before


def test_a_shard_edited_in_place_at_its_size_is_rebuilt(small_build, tmp_path):
    out, folders, _ = small_build
    copy = tmp_path / "copy"
    shutil.copytree(out, copy, symlinks=True)
    mix = next(copy / "datasets" / f.name for n, f in folders.items() if "_mix_" in n)
    shard = sorted(mix.glob("*_train_*.bin"))[0]
    original = shard.read_bytes()
    edited = bytearray(original)
    edited[len(edited) // 2] ^= 0xFF  # the middle of a token, the size unchanged
    shard.write_bytes(bytes(edited))
    lines = []
    build(SMALL, copy, log=lines.append)
    assert "up to date" not in lines[0] and shard.read_bytes() == original


def test_no_document_is_in_both_splits_of_the_real_corpus(dataset):
    for folder in map(Path, dataset["folders"].values()):
        train, val = set(docs_in(folder, "train")), set(docs_in(folder, "val"))
        assert train and val and not train & val


def test_the_tokenizer_saw_training_documents_only(small_build):
    _, _, seen = small_build
    assert seen and all(d["split"] == "train" for d in seen)
    keys = {(d["source"], d["key"]) for d in seen}
    assert not any(is_validation(s, k, SMALL.val_fraction) for s, k in keys)


def test_manifest_describes_every_shard_and_source(small_build):
    out, folders, _ = small_build
    domains = {s.domain for s in SOURCES}
    assert {n.split("_")[1] for n in folders} == domains | {"mix"}
    mix = json.loads((next(f for n, f in folders.items() if "_mix_" in n) / "manifest.json").read_text())
    assert {s["name"] for s in mix["sources"]} == {s.name for s in SOURCES}
    assert all(s["licence"] and s["debian_package"] for s in mix["sources"])
    tok = out / mix["tokenizer"]["path"]
    assert hashlib.sha256(tok.read_bytes()).hexdigest() == mix["tokenizer"]["sha256"]
    folder = next(f for n, f in folders.items() if "_mix_" in n)
    for split in ("train", "val"):
        total = 0
        for shard in mix["splits"][split]["shards"]:
            path = folder / shard["file"]
            assert hashlib.sha256(path.read_bytes()).hexdigest() == shard["sha256"]
            assert shard_token_count(path) == shard["tokens"]
            total += shard["tokens"]
        assert total == mix["splits"][split]["tokens"]
        assert mix["splits"][split]["documents"] == sum(v[split]["documents"] for v in mix["per_source"].values())
    assert len(mix["splits"]["train"]["shards"]) > 1  # small shards: the stream crosses files


def test_the_split_is_by_key_and_stable():
    assert is_validation("gcide", "gcide:Zebra", 0.5) == is_validation("gcide", "gcide:Zebra", 0.5)
    share = np.mean([is_validation("x", str(i), 0.02) for i in range(20000)])
    assert 0.015 < share < 0.025


def test_documents_are_cut_from_real_text():
    by_name = {s.name: s for s in SOURCES}
    jargon = list(jargon_entries(by_name["jargon-file"].files()))
    assert any(k.endswith(":hacker") for k, _ in jargon) and len(jargon) > 2000
    pages = list(dictionary_pages(by_name["gcide"].files()))
    assert all(not t.startswith("00-database") for _, t in pages) and len(pages) > 5000
    sections = list(texinfo_sections(by_name["gnu-standards"].files()))
    assert any("Writing Robust Programs" in k for k, _ in sections)


def test_invalid_build_settings_are_listed_together():
    out = subprocess.run([sys.executable, "-m", "data.build", "--vocab-size", "100", "--val-fraction", "2"],
                         capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    assert out.returncode != 0 and "--vocab-size=100" in out.stderr and "--val-fraction=2.0" in out.stderr


def test_fineweb_helper_says_it_needs_the_network(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    out = subprocess.run([sys.executable, "-m", "data.fineweb", "--out", str(tmp_path)], capture_output=True,
                         text=True, env=env, cwd=Path(__file__).resolve().parents[1], timeout=120)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert "needs the network" in out.stderr or "needs the optional extra" in out.stderr
    assert not list(tmp_path.rglob("*.bin"))


# ------------------------------------------------------------------------- the corpus's identity


def test_every_manifest_holds_the_fingerprint_of_the_tokenizer_and_every_shard(small_build):
    out, folders, _ = small_build
    manifests = {name: json.loads((f / "manifest.json").read_text()) for name, f in folders.items()}
    recomputed = hashlib.sha256(f"tokenizer:{manifests[next(iter(manifests))]['tokenizer']['sha256']}\n".encode())
    for name in sorted(folders):
        for split in ("train", "val"):
            for shard in manifests[name]["splits"][split]["shards"]:
                digest = hashlib.sha256((folders[name] / shard["file"]).read_bytes()).hexdigest()
                recomputed.update(f"{name}/{shard['file']}:{digest}\n".encode())
    assert {m["corpus_fingerprint"] for m in manifests.values()} == {recomputed.hexdigest()}


def test_differences_from_the_reference_are_named(small_build):
    out, folders, _ = small_build
    mix = next(f for n, f in folders.items() if "_mix_" in n)
    built = build_mod.identity(json.loads((mix / "manifest.json").read_text()))
    assert build_mod.identity_differences(built, built) == []
    other = json.loads(json.dumps(built))
    other["corpus_fingerprint"] = "0" * 64
    other["sources"]["python-stdlib"]["debian_version"] = "3.11.2-6"
    other["sources"]["gcide"]["files"] = 2
    assert build_mod.identity_differences(built, other) == [
        "gcide: files 2 in the reference, 1 here",
        f"python-stdlib: debian_version 3.11.2-6 in the reference, {built['sources']['python-stdlib']['debian_version']} here"]
    del other["sources"]["gcide"]
    other["sources"]["python-stdlib"] = built["sources"]["python-stdlib"]
    assert build_mod.identity_differences(built, other) == ["gcide: not in the reference"]


def test_the_warning_is_one_line_naming_what_differs(small_build, tmp_path, monkeypatch):
    out, folders, _ = small_build
    mix = next(f for n, f in folders.items() if "_mix_" in n)
    locked = build_mod.identity(json.loads((mix / "manifest.json").read_text()))
    lock = tmp_path / "corpus.lock.json"
    monkeypatch.setattr(build_mod, "LOCK", lock)
    lock.write_text(json.dumps(locked))
    lines = []
    build_mod.report_identity(mix, lines.append)
    assert lines == [f"data: corpus fingerprint {locked['corpus_fingerprint']}"]
    locked["corpus_fingerprint"] = "f" * 64
    locked["sources"]["jargon-file"]["debian_version"] = "4.4.6-1"
    lock.write_text(json.dumps(locked))
    lines.clear()
    build_mod.report_identity(mix, lines.append)
    assert len(lines) == 2 and lines[1].startswith("data: WARNING: this corpus differs") and \
        "jargon-file: debian_version 4.4.6-1 in the reference" in lines[1]


def test_the_documented_table_and_fingerprint_are_the_lock_file():
    lock = json.loads(build_mod.LOCK.read_text())
    readme = (Path(__file__).resolve().parents[1] / "docs" / "dataset.md").read_text()
    assert build_mod.corpus_table(lock) in readme
    assert f"`{lock['corpus_fingerprint']}`" in readme


def test_same_package_versions_build_the_reference_corpus(dataset):
    """On a machine with the reference's package versions, `make data` must reproduce its fingerprint."""
    lock = json.loads(build_mod.LOCK.read_text())
    mix = Path(dataset["data_path"])
    built = build_mod.identity(json.loads((mix / "manifest.json").read_text()))
    versions = {n: s["debian_version"] for n, s in built["sources"].items()}
    if versions != {n: s["debian_version"] for n, s in lock["sources"].items()}:
        pytest.skip(f"other package versions here ({versions}): make data warns, nothing to reproduce")
    assert built == lock


def test_the_tokenizer_does_not_depend_on_the_machines_core_count(small_build, monkeypatch):
    _, _, seen = small_build
    models = []
    for cores in (2, 8):
        monkeypatch.setattr(os, "cpu_count", lambda: cores)
        models.append(build_mod.train_tokenizer(SMALL, seen))
    assert models[0] == models[1]


def test_the_data_build_imports_no_torch():
    """make test builds the corpus while torch is still installing (Makefile): the build may need
    numpy and sentencepiece only."""
    code = "import sys; sys.modules['torch'] = None; import data.build, data.sources; print('built without torch')"
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and "built without torch" in done.stdout, done.stderr[-2000:]
