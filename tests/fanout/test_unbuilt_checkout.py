"""A fresh clone has fastpush's sources but not its compiled fan-out: `python -m fastpush` run from
its root imports the clone's `fastpush/` (the current directory comes first on sys.path), not the
installed package. It must still run, on the pure-Python twin, with one line saying how to build
the compiled module; `FASTPUSH_NO_EXTENSIONS=0` makes the missing module an error, and the
benchmark refuses to measure the twin unless asked to.

Each test copies the package (and the benchmarks) without any compiled file into a temporary
directory and runs Python there. The launcher drops setuptools' editable-install finders from
sys.meta_path first: with another checkout installed in editable mode (as CI does), that finder
would hand out the other checkout's compiled module, which a fresh clone with a plain
`pip install .` does not have.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli_process import REPO

COMPILED_SUFFIXES = (".so", ".pyd")
LAUNCHER = """
import runpy, sys
sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, "__module__", "").startswith("__editable__")]
module, sys.argv[1:] = sys.argv[1], sys.argv[2:]
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""
PROBE = "import fastpush, fastpush.fanout as f; print(f.IMPLEMENTATION)"


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("clone")
    ignore = shutil.ignore_patterns("__pycache__", "*.c", *(f"*{suffix}" for suffix in COMPILED_SUFFIXES))
    for package in ("fastpush", "benches"):
        shutil.copytree(REPO / package, root / package, ignore=ignore)
    for name in ("setup.py", "pyproject.toml"):
        shutil.copy(REPO / name, root / name)
    assert not [p for p in root.rglob("*") if p.suffix in COMPILED_SUFFIXES]
    return root


def _run(clone: Path, code: str, *args: str, switch: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FASTPUSH_NO_EXTENSIONS", "PYTHONPATH")}
    if switch is not None:
        env["FASTPUSH_NO_EXTENSIONS"] = switch
    return subprocess.run([sys.executable, "-c", code, *args], cwd=clone, env=env, capture_output=True, text=True,
                          timeout=60, check=False)


def _python(clone: Path, *args: str, switch: str | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m ARGS` in the clone."""
    return _run(clone, LAUNCHER, *args, switch=switch)


def _probe(clone: Path, switch: str | None = None) -> subprocess.CompletedProcess[str]:
    """Which fan-out the clone's fastpush takes."""
    return _run(clone, LAUNCHER.split("module, sys.argv")[0] + PROBE, switch=switch)


def test_python_m_fastpush_runs_on_the_twin_with_one_line_saying_how_to_build(clone):
    result = _python(clone, "fastpush", "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("fastpush ")
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    warning = lines[0]
    assert "pure-Python fan-out" in warning
    assert f"not built in {clone / 'fastpush'}: run `pip install -e .` or " \
           f"`python3 setup.py build_ext --inplace` in {clone}" in warning
    assert "FASTPUSH_NO_EXTENSIONS=1" in warning


def test_the_clone_is_what_runs_and_it_runs_the_twin(clone):
    result = _probe(clone)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "fastpush._fanout_py"


def test_choosing_the_twin_is_quiet(clone):
    result = _python(clone, "fastpush", "--version", switch="1")
    assert (result.returncode, result.stderr) == (0, "")


def test_asking_for_the_compiled_module_makes_its_absence_an_error(clone):
    result = _probe(clone, switch="0")
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: the compiled fan-out is not built in"), result.stderr
    assert "build_ext --inplace" in last


def test_the_benchmark_refuses_to_measure_the_twin_unasked(clone):
    result = _python(clone, "benches.fanout", "--quick")
    assert result.returncode == 2, result.stderr
    refusal = result.stderr.splitlines()[-1]
    assert refusal.startswith("benches.fanout: not measuring: the compiled fan-out is not built")
    assert "pip install -e ." in refusal and "FASTPUSH_NO_EXTENSIONS=1" in refusal
