"""data/sources.py and data/install_sources.sh: a source is its Debian package's files, no more
and no less; a missing package is installed, not skipped."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

import data.build as build_mod
from data.sources import SOURCES, Source, is_installed, package_files, whole_files

ROOT = Path(__file__).resolve().parents[1]


def owners(paths: list[Path]) -> dict[str, str]:
    """{path: owning package} from dpkg's own database, independently of package_files()."""
    out = subprocess.run(["dpkg-query", "-S", *map(str, paths)], capture_output=True, text=True, check=True)
    result = {}
    for line in out.stdout.splitlines():
        package, _, path = line.partition(": ")
        result[path] = package.split(":")[0]
    return result


@pytest.mark.parametrize("source", SOURCES, ids=[s.name for s in SOURCES])
def test_every_file_a_source_reads_belongs_to_its_package(dataset, source):
    files = source.files()
    assert files, f"{source.name}: no files (is {source.debian_package} installed?)"
    found = owners(files)
    assert {found[str(p)] for p in files} == {source.debian_package}


def test_an_unrelated_file_in_a_shared_folder_does_not_join_the_corpus(dataset):
    by_name = {s.name: s for s in SOURCES}
    before = {name: by_name[name].files() for name in ("python-stdlib", "python-stdlib-tests")}
    probes = [Path("/usr/lib/python3.11/zz_unrelated_probe_module.py"),
              Path("/usr/lib/python3.11/test/zz_unrelated_probe_test.py")]
    if not all(os.access(p.parent, os.W_OK) for p in probes):
        pytest.skip("the shared folders are not writable here")
    try:
        for p in probes:
            p.write_text("print('a module another package installed')\n")
        after = {name: by_name[name].files() for name in before}
    finally:
        for p in probes:
            p.unlink(missing_ok=True)
    assert after == before


def test_a_package_that_is_not_installed_has_no_files_even_where_its_folder_has_some():
    # the stdlib's own test/ files would have counted as the test suite under the old folder glob
    ghost = Source("ghost", "code", "no-such-package-for-the-corpus", "none", "not a package",
                   lambda p: p.suffix == ".py", whole_files(Path("/usr/lib/python3.11")))
    assert not is_installed(ghost.debian_package)
    assert package_files(ghost.debian_package) == [] and ghost.files() == []
    assert list(Path("/usr/lib/python3.11").glob("*.py"))  # the folder itself is full of .py files


def test_missing_packages_are_named_by_package(monkeypatch):
    monkeypatch.setattr(build_mod, "DEBIAN_PACKAGES", ["dict-gcide", "no-such-package-for-the-corpus"])
    assert build_mod.missing_packages() == ["no-such-package-for-the-corpus"]


def test_install_step_runs_apt_get_for_a_missing_package(tmp_path):
    """install_sources.sh with a stand-in for the package query and for apt-get, so the real
    system is untouched: a missing package must reach `apt-get install`, not be skipped."""
    fake_python = tmp_path / "python"
    fake_python.write_text("#!/bin/sh\necho jargon-text\n")  # what `-m data.build --missing-packages` prints
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "apt-calls"
    (bin_dir / "apt-get").write_text(f"#!/bin/sh\necho \"$@\" >> {calls}\n")
    for f in (fake_python, bin_dir / "apt-get"):
        f.chmod(0o755)
    out = subprocess.run(["bash", str(ROOT / "data" / "install_sources.sh"), str(fake_python)], capture_output=True,
                         text=True, env=dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}"))
    if os.geteuid() == 0:
        assert out.returncode == 0, out.stderr
        assert "install -y -qq --no-install-recommends jargon-text" in calls.read_text()
    else:
        assert out.returncode == 1 and "sudo apt-get install jargon-text" in out.stderr and not calls.exists()
