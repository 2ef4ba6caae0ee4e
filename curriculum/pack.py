"""One small file for a submission: the curriculum's imported modules, minified and compressed.

    python -m curriculum.plugin --copy-to ../my_submission --pack

A run counts every byte of code it needs. `pack` writes `curriculum/__init__.py` alone: the
modules a configuration imports, each stripped of what does nothing when it runs (docstrings,
comments, the annotations of functions, indentation beyond one space), compressed with LZMA
and written as base85 text. On import it registers a finder that builds each module from that
text, so `from curriculum.plugin import CurriculumTokenLoader` and every import inside the
package work as they do from the folder; a module the packed configuration did not import is
not there (ModuleNotFoundError), so pack with the settings the run uses. Nothing is pruned
inside a module: the packed code is the readable code, token for token (checked when packing:
each module's syntax tree after minifying equals its tree with the same parts removed).

This module is not imported by a run; only the copy command uses it.
"""
from __future__ import annotations

import ast
import base64
import lzma
import os
import re
import shutil
import tempfile
from pathlib import Path

# The packed file's filters, written into its loader too: raw LZMA2 has no header to spend bytes on
FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}]
SEPARATOR = "\0"

# What the packed __init__.py runs: the finder, then the package's own __init__. Kept short: it is
# counted too. `S` maps a module's name inside the package ("loader", "readers.base"; a subpackage's
# __init__ under the subpackage's name) to its source; `P` names the subpackages; the modules'
# __file__ is this file.
LOADER = """import base64,importlib.abc as A,importlib.util as U,lzma,sys
S=lzma.decompress(base64.b85decode({blob!r}),lzma.FORMAT_RAW,filters=[{{'id':lzma.FILTER_LZMA2}}]).decode().split('\\0')
S=dict(zip(S[::2],S[1::2]))
P={{k.rpartition('.')[0] for k in S}}
K=lambda n:n[len(__name__)+1:]if n.startswith(__name__+'.')else''
class _F(A.MetaPathFinder,A.Loader):
 def find_spec(s,n,p,t=None):
  if K(n)in S:return U.spec_from_loader(n,s,is_package=K(n)in P)
 def create_module(s,spec):pass
 def exec_module(s,m):m.__file__=__file__;exec(compile(S[K(m.__name__)],m.__name__,'exec'),m.__dict__)
sys.meta_path.insert(0,_F())
exec(compile(S['__init__'],__name__,'exec'))
"""


def _strip(tree: ast.Module) -> ast.Module:
    """Remove docstrings and the annotations of functions (with `from __future__ import
    annotations` they are strings nothing reads; a dataclass's field annotations stay)."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            node.returns = None
            a = node.args
            for arg in a.posonlyargs + a.args + a.kwonlyargs + [x for x in (a.vararg, a.kwarg) if x]:
                arg.annotation = None
    return tree


def minify(source: str, name: str = "<module>") -> str:
    """The module's code with docstrings, comments and function annotations gone and one space per
    indentation level; refused if its syntax tree is not the stripped original's."""
    stripped = _strip(ast.parse(source, name))
    text = ast.unparse(stripped)  # one line per statement: no string literal spans lines
    text = "\n".join(re.sub(r"^(?:    )+", lambda m: " " * (len(m.group(0)) // 4), line) for line in text.splitlines())
    if ast.dump(ast.parse(text, name)) != ast.dump(stripped):
        raise ValueError(f"{name}: minifying changed the code")
    return text + "\n"


def module_key(path: Path, root: Path) -> str:
    """A file's name inside its package `root` as the packed loader looks it up: "loader",
    "readers.base", and a subpackage's __init__.py as "readers" (the top one stays "__init__")."""
    parts = path.relative_to(root).with_suffix("").parts
    if len(parts) > 1 and parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def packed_init(files: list[Path], root: Path | None = None) -> str:
    """The text of a package's `__init__.py` (curriculum/ or trainer/, folder `root`: by default
    the folder of the files' __init__.py) that serves `files` (the package's own files and its
    subpackages', its __init__.py among them) as the modules of the package."""
    tops = [f for f in files if f.name == "__init__.py" and (root is None or f.parent == root)]
    if not tops:
        raise ValueError("the package's __init__.py must be among the packed files")
    root = root or min(tops, key=lambda f: len(f.parts)).parent
    parts = []
    for f in sorted(files):
        parts += [module_key(f, root), minify(f.read_text(), f.name)]
    if any(SEPARATOR in p for p in parts):
        raise ValueError("a module holds a NUL character; it cannot be packed")
    blob = base64.b85encode(lzma.compress(SEPARATOR.join(parts).encode(), lzma.FORMAT_RAW, filters=FILTERS))
    return LOADER.format(blob=blob)


def write_folder(target: Path, files: dict[str, str]) -> list[Path]:
    """Write `files` (a path inside `target` -> its text) as the new folder `target`: staged under a
    hidden name beside it and renamed once whole, so that a failure leaves no half-written folder."""
    if target.exists():
        raise FileExistsError(f"{target} exists; remove it or choose another folder")
    made = [d for d in (target.parent, *target.parent.parents) if not d.exists()]  # made here, removed on failure
    staging = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        for name, text in files.items():
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            (staging / name).write_text(text)
        os.chmod(staging, 0o755)  # a folder like any other once it is in place (mkdtemp makes it private)
        os.replace(staging, target)
    except BaseException:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        for folder in made:  # innermost first: a full disk leaves no empty folder behind
            try:
                folder.rmdir()
            except OSError:
                break
        raise
    return [target / name for name in files]
