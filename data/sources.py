"""The real texts the embedded dataset is built from, and how each is cut into documents.

Every source is one Debian package with a free licence, so any Debian or Ubuntu machine can
install it offline from the distribution's archive (`make data` does, when run as root).
A source's files are exactly those its package owns (`dpkg-query -L`) that its selection
accepts: never a glob over a shared folder, where modules of other packages (present on one
machine, absent on the next) would join the corpus. A source yields documents as (key,
text) pairs; the key is stable across builds and is what the train/validation split hashes,
so the split never depends on file order.
"""
from __future__ import annotations

import gzip
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

Document = tuple[str, str]


@dataclass(frozen=True)
class Source:
    name: str
    domain: str
    debian_package: str
    licence: str
    description: str
    selects: Callable[[Path], bool]  # which of the package's files are text for the corpus
    documents: Callable[[list[Path]], Iterator[Document]]

    def files(self) -> list[Path]:
        return sorted(p for p in package_files(self.debian_package) if self.selects(p) and p.is_file())


def package_field(package: str, field: str) -> str | None:
    """One field of dpkg's record of the package ('db:Status-Abbrev', 'Version'); None when
    dpkg does not know the package or is not there."""
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f", f"${{{field}}}", package], capture_output=True, text=True,
                             check=False)
    except OSError:
        return None
    return out.stdout if out.returncode == 0 else None


def is_installed(package: str) -> bool:
    return (package_field(package, "db:Status-Abbrev") or "").startswith("ii")


def package_files(package: str) -> list[Path]:
    """Every path the installed package owns; empty when it is not installed."""
    if not is_installed(package):
        return []
    out = subprocess.run(["dpkg-query", "-L", package], capture_output=True, text=True, check=False)
    return [Path(line) for line in out.stdout.splitlines() if line.startswith("/")]


# ---------------------------------------------------------------- cutting text into documents

_RST_ROOT = Path("/usr/share/doc/python3.11/html/_sources")
_STDLIB_ROOT = Path("/usr/lib/python3.11")
_GNU_ROOT = Path("/usr/share/doc/gnu-standards")
_JARGON = Path("/usr/share/doc/jargon-text/jargon.txt.gz")
_GCIDE = Path("/usr/share/dictd/gcide.dict.dz")


def _read_bytes(path: Path) -> bytes:
    opener = gzip.open if path.suffix in (".gz", ".dz") else open
    with opener(path, "rb") as f:
        return f.read()


def _read_text(path: Path) -> str:
    return _read_bytes(path).decode("utf-8")


def _read_mostly_utf8(path: Path) -> str:
    """UTF-8, except the few lines of an old file that are in Windows-1252 (curly quotes)."""
    data = _read_bytes(path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        lines = []
        for line in data.split(b"\n"):
            try:
                lines.append(line.decode("utf-8"))
            except UnicodeDecodeError:
                lines.append(line.decode("cp1252", errors="replace"))
        return "\n".join(lines)


def whole_files(root: Path) -> Callable[[list[Path]], Iterator[Document]]:
    """One document per file: a documentation page or a source module."""
    def documents(paths: list[Path]) -> Iterator[Document]:
        for path in paths:
            try:
                text = _read_text(path)
            except UnicodeDecodeError:
                continue  # the test suite's deliberately mis-encoded fixtures are not text
            if text.strip():
                yield str(path.relative_to(root)), text
    return documents


def texinfo_sections(paths: list[Path]) -> Iterator[Document]:
    """GNU manuals rendered as plain text: one document per (sub)section, found by the
    underline of '*', '=' or '-' that makeinfo draws under every heading."""
    underline = re.compile(r"^([*=\-])\1{2,}$")
    for path in paths:
        lines = _read_text(path).splitlines()
        starts = [i - 1 for i, line in enumerate(lines)
                  if i > 0 and underline.match(line) and len(line) == len(lines[i - 1])]
        bounds = [0] + starts + [len(lines)]
        for n, (a, b) in enumerate(zip(bounds, bounds[1:])):
            text = "\n".join(lines[a:b]).strip()
            if text:
                yield f"{path.name}#{n}:{lines[a].strip()[:60]}", text + "\n"


def jargon_entries(paths: list[Path]) -> Iterator[Document]:
    """The Jargon File: the front matter, then one document per entry (`   :term: ...`)."""
    entry = re.compile(r"^   :(.+?):", re.MULTILINE)
    for path in paths:
        text = _read_text(path)
        marks = [m.start() for m in entry.finditer(text)]
        bounds = [0] + marks + [len(text)]
        for n, (a, b) in enumerate(zip(bounds, bounds[1:])):
            body = text[a:b].strip()
            if body:
                head = entry.match(text, a)
                yield f"jargon#{n}:{head.group(1) if head else 'front'}", body + "\n"


def dictionary_pages(paths: list[Path], page_bytes: int = 4000) -> Iterator[Document]:
    """GCIDE in dictd format: headword entries run together in alphabetical order. A single
    entry is a line or two, so consecutive entries are gathered into pages of about
    `page_bytes`, the way a printed dictionary groups them; the database's own metadata
    entries (`00-database-*`) are left out."""
    for path in paths:
        text = _read_mostly_utf8(path)
        body = text[text.index("\n\n", text.index("00-database-url")):] if "00-database-url" in text else text
        entries = [e for e in re.split(r"\n\s*\n(?=\S)", body) if e.strip() and not e.startswith("00-database")]
        page: list[str] = []
        size = 0
        for e in entries:
            page.append(e.strip("\n"))
            size += len(e)
            if size >= page_bytes:
                yield f"gcide:{page[0].split(chr(10))[0][:60]}", "\n\n".join(page) + "\n"
                page, size = [], 0
        if page:
            yield f"gcide:{page[0].split(chr(10))[0][:60]}", "\n\n".join(page) + "\n"


def _under(root: Path, suffix: str, exclude: tuple[str, ...] = ()) -> Callable[[Path], bool]:
    """Files below `root` whose name ends with `suffix`, in no folder named in `exclude`."""
    def selects(p: Path) -> bool:
        return (p.name.endswith(suffix) and root in p.parents
                and not set(p.relative_to(root).parts[:-1]) & set(exclude))
    return selects


_NOT_MODULES = ("dist-packages", "site-packages", "__pycache__", "test")

SOURCES: list[Source] = [
    Source("python-docs", "docs", "python3.11-doc", "PSF-2.0",
           "Python 3.11 documentation, reStructuredText sources (one document per page)",
           _under(_RST_ROOT, ".rst.txt"), whole_files(_RST_ROOT)),
    Source("gnu-standards", "docs", "gnu-standards", "GFDL-1.3-or-later (no invariant sections)",
           "GNU Coding Standards and GNU Maintainers Information (one document per section)",
           _under(_GNU_ROOT, ".text.gz"), texinfo_sections),
    Source("jargon-file", "prose", "jargon-text", "public domain",
           "The Jargon File 4.4.7 (one document per entry)",
           lambda p: p == _JARGON, jargon_entries),
    Source("gcide", "prose", "dict-gcide", "GPL-2.0-or-later",
           "GNU Collaborative International Dictionary of English 0.48 (pages of consecutive entries)",
           lambda p: p == _GCIDE, dictionary_pages),
    Source("python-stdlib-core", "code", "libpython3.11-minimal", "PSF-2.0",
           "Python 3.11 standard library, the core modules Debian ships apart (one document per module)",
           _under(_STDLIB_ROOT, ".py", _NOT_MODULES), whole_files(_STDLIB_ROOT)),
    Source("python-stdlib", "code", "libpython3.11-stdlib", "PSF-2.0",
           "Python 3.11 standard library sources (one document per module)",
           _under(_STDLIB_ROOT, ".py", _NOT_MODULES), whole_files(_STDLIB_ROOT)),
    Source("python-stdlib-tests", "code", "libpython3.11-testsuite", "PSF-2.0",
           "Python 3.11 standard library test suite (one document per module)",
           _under(_STDLIB_ROOT / "test", ".py", ("__pycache__",)), whole_files(_STDLIB_ROOT)),
]

DEBIAN_PACKAGES = sorted({s.debian_package for s in SOURCES})
