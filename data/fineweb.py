"""Fetch the published FineWeb sp1024 export into the challenge layout (needs the network).

    python -m data.fineweb                       # validation split and all 80 training shards (8B tokens)
    python -m data.fineweb --train-shards 10     # validation split, 10 x 100M training tokens

Files land in data/datasets/fineweb10B_sp1024/ and data/tokenizers/, the paths train_gpt.py
uses by default. Every shard is validated after download; existing valid files are kept.
Needs the optional extra `huggingface_hub` (make extras) and a connection to the hub.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from curriculum.shards import ShardFormatError, shard_token_count  # noqa: E402

REPO_ID = os.environ.get("FINEWEB_REPO_ID", "willdepueoai/parameter-golf")
DATA_DIR = Path(__file__).resolve().parent


class NeedsNetwork(RuntimeError):
    pass


def fetch(remote: str, destination: Path) -> Path:
    """One file of the dataset repo, copied to `destination` under a temporary name first."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, OfflineModeIsEnabled

    if destination.exists():
        return destination
    try:
        cached = hf_hub_download(repo_id=REPO_ID, filename=remote, repo_type="dataset")
    except (LocalEntryNotFoundError, OfflineModeIsEnabled, OSError) as e:  # before its base class below
        raise NeedsNetwork(f"could not download {remote} from the Hugging Face hub: this helper needs "
                           f"the network ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    except EntryNotFoundError:
        raise NeedsNetwork(f"{REPO_ID} has no file {remote} (is --remote-root right?)") from None
    destination.parent.mkdir(parents=True, exist_ok=True)
    tmp = destination.with_name(f".{destination.name}.tmp{os.getpid()}")
    shutil.copyfile(Path(cached).resolve(), tmp)
    os.replace(tmp, destination)
    return destination


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train-shards", type=int, default=80,
                    help="training shards of 100M tokens to fetch (default: the whole published set; an 8xH100 "
                         "run reads 5.8-7.2B tokens, twice that with the curriculum at 2x)")
    ap.add_argument("--variant", default="fineweb10B_sp1024")
    ap.add_argument("--remote-root", default="datasets", help="folder of the export inside the dataset repo")
    ap.add_argument("--out", type=Path, default=DATA_DIR)
    args = ap.parse_args(argv)
    if args.train_shards < 0:
        print(f"fineweb: --train-shards={args.train_shards}: must be >= 0", file=sys.stderr)
        return 2
    try:
        import huggingface_hub  # noqa: F401
    except ImportError:
        print("fineweb: needs the optional extra huggingface_hub: run `make extras` "
              "(pip install -r requirements-extras.txt), then this again, with network access", file=sys.stderr)
        return 2
    root = args.remote_root.strip("/")
    try:
        manifest = json.loads(fetch(f"{root}/manifest.json", args.out / "fineweb_manifest.json").read_text())
        entry = next((d for d in manifest.get("datasets", []) if d.get("name") == args.variant), None)
        if entry is None:
            raise NeedsNetwork(f"{args.variant} is not in {root}/manifest.json")
        stats = entry.get("stats") or {}
        n_train, n_val = int(stats.get("files_train", 0)), int(stats.get("files_val", 1))
        if args.train_shards > n_train:
            raise NeedsNetwork(f"{args.variant} has {n_train} training shards, {args.train_shards} asked for")
        folder = args.out / "datasets" / args.variant
        names = [f"fineweb_val_{i:06d}.bin" for i in range(n_val)]
        names += [f"fineweb_train_{i:06d}.bin" for i in range(args.train_shards)]
        for name in names:
            path = fetch(f"{root}/datasets/{args.variant}/{name}", folder / name)
            print(f"fineweb: {path} ({shard_token_count(path):,} tokens)")
        tokenizer = next((t for t in manifest.get("tokenizers", []) if t.get("name") == entry.get("tokenizer_name")), {})
        for key in ("model_path", "vocab_path"):
            if tokenizer.get(key):
                path = fetch(f"{root}/{tokenizer[key]}", args.out / "tokenizers" / Path(tokenizer[key]).name)
                print(f"fineweb: {path}")
    except (NeedsNetwork, ShardFormatError) as e:
        print(f"fineweb: {e}", file=sys.stderr)
        return 1
    print(f"fineweb: done; train with DATA_PATH={args.out / 'datasets' / args.variant}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
