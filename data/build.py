"""Build the embedded default dataset: real multi-domain text -> tokenizer -> challenge shards.

    python -m data.build                     # everything, into data/ (skipped when up to date)
    python -m data.build --max-docs 40 --out /tmp/d --vocab-size 384   # a small build

Steps, each deterministic (same inputs, same bytes):
1. read every source of data/sources.py and cut it into documents;
2. drop exact duplicates (first occurrence wins, in source order);
3. split by document: a document is validation when the hash of its source and key falls
   below VAL_FRACTION, so the split never moves when files are added or reordered;
4. train a SentencePiece BPE tokenizer on training documents only;
5. write one dataset per domain and one mixed dataset in the challenge format, BOS before
   every document, training documents in a seeded shuffle, with a manifest.json each.

The corpus has one identity, its fingerprint: a sha256 over the tokenizer and every shard of
every dataset. `make data` prints it and compares the build with data/corpus.lock.json, the
build the documented figures were measured on, naming what differs (package versions, file
counts per source) when it is not the same.

    python -m data.build --table [--from-lock]   # docs/dataset.md's per-source table
    python -m data.build --lock                  # make the current build the reference
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from curriculum.domains import SIDECAR_SUFFIX, sidecar_path, write_sidecar  # noqa: E402
from curriculum.shards import BOS_ID, write_atomic, write_shard  # noqa: E402
from data.sources import DEBIAN_PACKAGES, SOURCES, is_installed, package_field  # noqa: E402

DATA_DIR = Path(__file__).resolve().parent
LOCK = DATA_DIR / "corpus.lock.json"
CODE_FILES = [DATA_DIR / "build.py", DATA_DIR / "sources.py", DATA_DIR.parent / "curriculum" / "shards.py",
              DATA_DIR.parent / "curriculum" / "domains.py"]


@dataclass(frozen=True)
class BuildConfig:
    vocab_size: int = 1024
    val_fraction: float = 0.02
    shard_tokens: int = 4_000_000
    shuffle_seed: int = 1337
    tokenizer_lines: int = 300_000
    # SentencePiece's BPE training gives another model for another thread count (measured:
    # 1, 2, 4 and 8 threads, four different models; the same count, the same model), so the
    # count is fixed rather than taken from the machine.
    tokenizer_threads: int = 2
    max_docs: int = 0  # per source; 0 = all (small builds are for tests)
    prefix: str = "embedded"
    # The published sp1024 tokenizer's options (SPEC.md); newlines and runs of spaces are
    # normalised to one space by nmt_nfkc, exactly as the challenge's text is.
    spm_options: dict = field(default_factory=lambda: dict(
        model_type="bpe", character_coverage=0.999, byte_fallback=True, split_digits=True,
        normalization_rule_name="nmt_nfkc", add_dummy_prefix=False,
        pad_id=0, bos_id=1, eos_id=2, unk_id=3, hard_vocab_limit=False))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def debian_version(package: str) -> str | None:
    return (package_field(package, "Version") or "").strip() or None


def missing_packages() -> list[str]:
    """The sources' Debian packages that dpkg does not report installed."""
    return [p for p in DEBIAN_PACKAGES if not is_installed(p)]


def corpus_fingerprint(tokenizer_sha256: str, datasets: dict[str, dict]) -> str:
    """sha256 over the tokenizer's hash and every shard's: {dataset name: its splits}."""
    h = hashlib.sha256(f"tokenizer:{tokenizer_sha256}\n".encode())
    for name in sorted(datasets):
        for split in sorted(datasets[name]):
            for shard in datasets[name][split]["shards"]:
                h.update(f"{name}/{shard['file']}:{shard['sha256']}\n".encode())
    return h.hexdigest()


def inputs_fingerprint(cfg: BuildConfig, files: dict[str, list[Path]]) -> str:
    """Everything the output depends on: the settings, every input file, the build code."""
    h = hashlib.sha256(json.dumps(asdict(cfg), sort_keys=True).encode())
    for name in sorted(files):
        for path in files[name]:
            h.update(f"{name}:{path}:{sha256_file(path)}\n".encode())
    for path in CODE_FILES:
        h.update(sha256_file(path).encode())
    return h.hexdigest()


def is_validation(source: str, key: str, fraction: float) -> bool:
    digest = hashlib.sha256(f"{source}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") / 2.0**64 < fraction


def collect_documents(cfg: BuildConfig, files: dict[str, list[Path]]) -> tuple[list[dict], int]:
    docs, seen, dropped = [], set(), 0
    for source in SOURCES:
        n = 0
        for key, text in source.documents(files[source.name]):
            digest = hashlib.sha256(text.encode()).digest()
            if digest in seen:
                dropped += 1
                continue
            seen.add(digest)
            docs.append(dict(source=source.name, domain=source.domain, key=key, text=text,
                             split="val" if is_validation(source.name, key, cfg.val_fraction) else "train"))
            n += 1
            if cfg.max_docs and n >= cfg.max_docs:
                break
    return docs, dropped


def train_tokenizer(cfg: BuildConfig, train_docs: list[dict]) -> bytes:
    """SentencePiece BPE on training documents only; lines are subsampled at an even stride
    so the tokenizer sees every source in proportion and the result is reproducible."""
    import sentencepiece as spm

    lines = [line.strip() for d in sorted(train_docs, key=lambda d: (d["source"], d["key"]))
             for line in d["text"].splitlines() if line.strip()]
    stride = max(1, len(lines) // cfg.tokenizer_lines)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines[::stride]), model_writer=model, vocab_size=cfg.vocab_size,
        input_sentence_size=0, num_threads=cfg.tokenizer_threads, minloglevel=2, **cfg.spm_options)
    return model.getvalue()


def encode_documents(model_proto: bytes, docs: list[dict]) -> None:
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_proto=model_proto)
    ids = sp.encode([d["text"] for d in docs], num_threads=os.cpu_count() or 1)
    for d, toks in zip(docs, ids):
        d["tokens"] = np.asarray([BOS_ID] + toks, dtype=np.uint16)


def write_split(out: Path, prefix: str, split: str, docs: list[dict], shard_tokens: int,
                domain_names: list[str]) -> list[dict]:
    """The split's documents, concatenated, as shards of `shard_tokens`; beside each shard a
    sidecar with where its documents start and their domains (curriculum/domains.py): the
    loader's mixture reports read the training ones, the evaluation scores each domain of the
    validation split in the same pass from the validation ones."""
    stream = np.concatenate([d["tokens"] for d in docs]) if docs else np.zeros(0, np.uint16)
    doc_starts = np.cumsum([0] + [len(d["tokens"]) for d in docs[:-1]]).astype(np.int64)
    doc_domains = np.asarray([domain_names.index(d["domain"]) for d in docs], dtype=np.uint8)
    shards = []
    for i, start in enumerate(range(0, max(len(stream), 1), shard_tokens)):
        path = out / f"{prefix}_{split}_{i:06d}.bin"
        write_shard(path, stream[start:start + shard_tokens])
        shard = dict(file=path.name, tokens=int(min(shard_tokens, len(stream) - start)), sha256=sha256_file(path))
        if docs:
            # the document under the shard's first token, then those that start inside it
            first = int(np.searchsorted(doc_starts, start, side="right")) - 1
            last = int(np.searchsorted(doc_starts, start + shard_tokens, side="left"))
            starts = np.maximum(doc_starts[first:last] - start, 0)
            write_sidecar(path, starts, doc_domains[first:last], domain_names, continues=bool(doc_starts[first] < start))
            shard["domains_sidecar"] = sidecar_path(path).name
        shards.append(shard)
    return shards


def split_counts(docs: list[dict]) -> dict:
    return dict(documents=len(docs), bytes=sum(len(d["text"].encode()) for d in docs),
                tokens=int(sum(len(d["tokens"]) for d in docs)))


def build(cfg: BuildConfig, out_root: Path, force: bool = False, log=print) -> dict[str, Path]:
    """Build (or find up to date) every dataset; return {dataset name: folder}. Concurrent
    builds into one folder (make run beside a test session) wait for each other."""
    import fcntl

    out_root.mkdir(parents=True, exist_ok=True)
    with open(out_root / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _build(cfg, out_root, force, log)


def _build(cfg: BuildConfig, out_root: Path, force: bool, log) -> dict[str, Path]:
    t0 = time.time()
    missing = missing_packages()
    if missing:
        raise SystemExit(
            "data: these sources' Debian packages are not installed: "
            + ", ".join(f"{s.name} ({s.debian_package})" for s in SOURCES if s.debian_package in missing)
            + f"\n  install them with: apt-get install {' '.join(missing)}   (make data does this when run as root)")
    files = {s.name: s.files() for s in SOURCES}
    fingerprint = inputs_fingerprint(cfg, files)
    domains = sorted({s.domain for s in SOURCES})
    tag = f"sp{cfg.vocab_size}"
    names = {d: f"{cfg.prefix}_{d}_{tag}" for d in domains} | {"mix": f"{cfg.prefix}_mix_{tag}"}
    datasets_dir, tok_dir = out_root / "datasets", out_root / "tokenizers"
    tok_path = tok_dir / f"{cfg.prefix}_{tag}.model"
    folders = {k: datasets_dir / v for k, v in names.items()}
    if not force and up_to_date(folders.values(), fingerprint, tok_path):
        log(f"data: up to date ({', '.join(names.values())}), skipping the build")
        report_identity(folders["mix"], log)
        link_challenge_names(folders["mix"], log)
        return {names[k]: f for k, f in folders.items()}

    docs, dropped = collect_documents(cfg, files)
    log(f"data: {len(docs)} documents from {len(SOURCES)} sources, {dropped} exact duplicates dropped "
        f"({time.time() - t0:.1f}s)")
    train_docs = [d for d in docs if d["split"] == "train"]
    model_proto = train_tokenizer(cfg, train_docs)
    log(f"data: tokenizer trained on the training split, vocab {cfg.vocab_size} ({time.time() - t0:.1f}s)")
    t_encode = time.time()
    encode_documents(model_proto, docs)
    n_tokens = sum(len(d['tokens']) for d in docs)
    log(f"data: {n_tokens:,} tokens encoded ({time.time() - t0:.1f}s; "
        f"{n_tokens / max(time.time() - t_encode, 1e-9) / 1e6:.2f} M tokens/s)")

    tok_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(tok_path, model_proto)
    tokenizer = dict(path=str(tok_path.relative_to(out_root)),
                     sha256=hashlib.sha256(model_proto).hexdigest(), vocab_size=cfg.vocab_size,
                     trained_on="train split only", options=cfg.spm_options)

    rng = np.random.Generator(np.random.PCG64(cfg.shuffle_seed))
    order = rng.permutation(len(docs))
    shuffled = [docs[i] for i in order]
    by_hash = sorted(docs, key=lambda d: hashlib.sha256(f"{d['source']}\0{d['key']}".encode()).digest())
    source_info = {s.name: dict(name=s.name, domain=s.domain, debian_package=s.debian_package,
                                debian_version=debian_version(s.debian_package), licence=s.licence,
                                description=s.description, files=len(files[s.name])) for s in SOURCES}
    datasets_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for kind, name in names.items():
        keep = (lambda d: True) if kind == "mix" else (lambda d, k=kind: d["domain"] == k)
        tmp = datasets_dir / f".{name}.tmp{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        splits = {}
        for split, ordered in (("train", shuffled), ("val", by_hash)):
            part = [d for d in ordered if keep(d) and d["split"] == split]
            splits[split] = split_counts(part) | dict(
                shards=write_split(tmp, cfg.prefix, split, part, cfg.shard_tokens, domains))
        written[kind] = (tmp, splits)
    corpus = corpus_fingerprint(tokenizer["sha256"], {names[k]: splits for k, (_, splits) in written.items()})
    for kind, name in names.items():
        tmp, splits = written[kind]
        per_source = {}
        for s in SOURCES:
            if kind in ("mix", s.domain):
                per_source[s.name] = {split: split_counts([d for d in docs if d["source"] == s.name and d["split"] == split])
                                      for split in ("train", "val")}
        manifest = dict(name=name, kind="mixed" if kind == "mix" else "domain",
                        domains=domains if kind == "mix" else [kind],
                        sources=[source_info[s] for s in per_source], per_source=per_source,
                        splits=splits, tokenizer=tokenizer, bos_id=BOS_ID, corpus_fingerprint=corpus,
                        build=dict(config=asdict(cfg), inputs_sha256=fingerprint, exact_duplicates_dropped=dropped,
                                   debian_packages=DEBIAN_PACKAGES))
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        # difficulty indexes (make index) outlive a rebuild: a run checks each against the new shards'
        # fingerprint, so one that no longer matches is refused with a message, never used
        for index in folders[kind].glob("*.cidx") if folders[kind].is_dir() else []:
            os.replace(index, tmp / index.name)
        shutil.rmtree(folders[kind], ignore_errors=True)
        os.replace(tmp, folders[kind])
        log(f"data: {folders[kind]}: train {splits['train']['tokens']:,} tokens in "
            f"{len(splits['train']['shards'])} shards, val {splits['val']['tokens']:,} tokens")
    log(f"data: built in {time.time() - t0:.1f}s")
    report_identity(folders["mix"], log)
    link_challenge_names(folders["mix"], log)
    return {names[k]: f for k, f in folders.items()}


CHALLENGE_NAMES_SUFFIX = "_fineweb_names"


def link_challenge_names(mix: Path, log) -> Path:
    """A folder beside the mix whose files are links to its shards and sidecars under the names
    the challenge's scripts glob (`fineweb_train_*.bin`, `fineweb_val_*.bin`), so that their
    `DATA_PATH` can point at the embedded corpus. Made whole under a temporary name, then renamed."""
    folder = mix.with_name(mix.name + CHALLENGE_NAMES_SUFFIX)
    wanted = {}
    for path in sorted(mix.iterdir()):
        split = next((sp for sp in ("train", "val") if f"_{sp}_" in path.name), None)
        if split is not None and path.name.endswith((".bin", SIDECAR_SUFFIX)):
            wanted["fineweb" + path.name[path.name.index(f"_{split}_"):]] = Path("..") / mix.name / path.name
    if folder.is_dir() and {p.name: Path(os.readlink(p)) for p in folder.iterdir() if p.is_symlink()} == wanted:
        return folder
    tmp = folder.with_name(f".{folder.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for name, target in wanted.items():
        (tmp / name).symlink_to(target)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    log(f"data: {folder}: the mix under the challenge's file names (DATA_PATH for the challenge's scripts)")
    return folder


# ------------------------------------------------------------------------- the corpus's identity


def identity(manifest: dict) -> dict:
    """What the lock keeps of a mixed dataset's manifest: the fingerprint and, per source, its
    package, version, file count and the documents and tokens of each split."""
    counts = manifest["per_source"]
    return dict(corpus_fingerprint=manifest["corpus_fingerprint"], vocab_size=manifest["tokenizer"]["vocab_size"], sources={  # in data/sources.py's order
        s["name"]: {k: s[k] for k in ("domain", "debian_package", "debian_version", "licence", "description", "files")}
        | {split: {k: counts[s["name"]][split][k] for k in ("documents", "tokens")} for split in ("train", "val")}
        for s in manifest["sources"]})


def identity_differences(built: dict, locked: dict) -> list[str]:
    """What differs between two identities, source by source; empty when the fingerprints agree."""
    if built["corpus_fingerprint"] == locked["corpus_fingerprint"]:
        return []
    out = []
    for name in sorted(set(built["sources"]) | set(locked["sources"])):
        b, l_ = built["sources"].get(name), locked["sources"].get(name)
        if b is None or l_ is None:
            out.append(f"{name}: {'not in this build' if b is None else 'not in the reference'}")
            continue
        for key in ("debian_version", "files"):
            if b[key] != l_[key]:
                out.append(f"{name}: {key} {l_[key]} in the reference, {b[key]} here")
    return out or ["package versions and file counts agree, so the texts or the tokenizer training differ"]


def report_identity(mix_folder: Path, log) -> None:
    manifest = json.loads((mix_folder / "manifest.json").read_text())
    built = identity(manifest)
    log(f"data: corpus fingerprint {built['corpus_fingerprint']}")
    if not LOCK.exists():
        return
    locked = json.loads(LOCK.read_text())
    if built["vocab_size"] != locked.get("vocab_size", BuildConfig().vocab_size):  # another tokenizer, another corpus
        log(f"data: vocab {built['vocab_size']}: the texts and splits of the reference corpus (vocab "
            f"{locked.get('vocab_size', BuildConfig().vocab_size)}), tokenized anew: its own fingerprint")
        return
    diffs = identity_differences(built, locked)
    if diffs:
        log(f"data: WARNING: this corpus differs from the one the documented figures were measured on "
            f"({locked['corpus_fingerprint'][:16]}…): " + "; ".join(diffs)
            + ". Everything works; numbers from the two corpora are not comparable.")


def corpus_table(ident: dict) -> str:
    """docs/dataset.md's per-source table, from an identity (a build's or the lock's)."""
    rows = ["| source (Debian package, version) | domain | licence | files | train docs | train tokens "
            "| val docs | val tokens |", "|---|---|---|---|---|---|---|---|"]
    total = dict(files=0, train_documents=0, train_tokens=0, val_documents=0, val_tokens=0)
    for name, s in ident["sources"].items():
        rows.append(f"| {s['description'].split(' (')[0]} (`{s['debian_package']}` {s['debian_version']}) "
                    f"| {s['domain']} | {s['licence']} | {s['files']:,} | {s['train']['documents']:,} "
                    f"| {s['train']['tokens']:,} | {s['val']['documents']:,} | {s['val']['tokens']:,} |")
        total["files"] += s["files"]
        for split in ("train", "val"):
            for k in ("documents", "tokens"):
                total[f"{split}_{k}"] += s[split][k]
    rows.append(f"| **mixed dataset** | all | | {total['files']:,} | {total['train_documents']:,} "
                f"| {total['train_tokens']:,} | {total['val_documents']:,} | {total['val_tokens']:,} |")
    return "\n".join(rows) + "\n"


def up_to_date(folders, fingerprint: str, tok_path: Path) -> bool:
    if not tok_path.exists():
        return False
    for folder in folders:
        try:
            manifest = json.loads((folder / "manifest.json").read_text())
        except (OSError, ValueError):
            return False
        if manifest["build"]["inputs_sha256"] != fingerprint or manifest["tokenizer"]["sha256"] != sha256_file(tok_path):
            return False
        for split in manifest["splits"].values():
            for shard in split["shards"]:
                path = folder / shard["file"]
                if not path.exists() or path.stat().st_size != 1024 + 2 * shard["tokens"]:
                    return False
                if sha256_file(path) != shard["sha256"]:  # its content, not only its size (a shard edited in place)
                    return False
                if "domains_sidecar" in shard and not (folder / shard["domains_sidecar"]).exists():
                    return False
    return True


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = BuildConfig()
    ap.add_argument("--out", type=Path, default=DATA_DIR, help="folder that receives datasets/ and tokenizers/")
    ap.add_argument("--vocab-size", type=int, default=defaults.vocab_size)
    ap.add_argument("--val-fraction", type=float, default=defaults.val_fraction)
    ap.add_argument("--shard-tokens", type=int, default=defaults.shard_tokens)
    ap.add_argument("--max-docs", type=int, default=0, help="at most this many documents per source (0: all)")
    ap.add_argument("--force", action="store_true", help="rebuild even when the manifest matches")
    ap.add_argument("--missing-packages", action="store_true",
                    help="print the sources' Debian packages that are not installed, and exit")
    ap.add_argument("--table", action="store_true", help="print the per-source table of the built corpus, and exit")
    ap.add_argument("--from-lock", action="store_true", help="with --table: the table of data/corpus.lock.json")
    ap.add_argument("--lock", action="store_true", help="write data/corpus.lock.json from the built corpus, and exit")
    args = ap.parse_args(argv)
    if args.missing_packages:
        print(" ".join(missing_packages()))
        return
    if args.table or args.lock:
        mix = args.out.resolve() / "datasets" / f"embedded_mix_sp{args.vocab_size}" / "manifest.json"
        if args.table and args.from_lock:
            print(corpus_table(json.loads(LOCK.read_text())), end="")
            return
        if not mix.exists():
            raise SystemExit(f"data: {mix} does not exist: run `make data` first")
        built = identity(json.loads(mix.read_text()))
        if args.lock:
            write_atomic(LOCK, (json.dumps(built, indent=2) + "\n").encode())
            print(f"data: {LOCK} now holds corpus {built['corpus_fingerprint']}")
        else:
            print(corpus_table(built), end="")
        return
    errors = []
    if not 256 < args.vocab_size <= 65536:
        errors.append(f"--vocab-size={args.vocab_size}: must be in (256, 65536] (byte fallback needs 256 ids, shards hold uint16)")
    if not 0.0 < args.val_fraction < 1.0:
        errors.append(f"--val-fraction={args.val_fraction}: must be in (0, 1)")
    if args.shard_tokens < 1:
        errors.append(f"--shard-tokens={args.shard_tokens}: must be positive")
    if args.max_docs < 0:
        errors.append(f"--max-docs={args.max_docs}: must be 0 (all) or positive")
    if errors:
        raise SystemExit("data: invalid settings:\n  " + "\n  ".join(errors))
    cfg = BuildConfig(vocab_size=args.vocab_size, val_fraction=args.val_fraction,
                      shard_tokens=args.shard_tokens, max_docs=args.max_docs)
    build(cfg, args.out.resolve(), force=args.force)


if __name__ == "__main__":
    main()
