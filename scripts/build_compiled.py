#!/usr/bin/env python3
"""Build the compiled hot modules (Cython) into build/compiled/ (see prod_core/compiled.py).

    .venv/bin/python scripts/build_compiled.py            # or: make compiled
    .venv/bin/python scripts/build_compiled.py --out DIR  # elsewhere (CRUPTO_COMPILED_DIR=DIR to use it)

Each module of ``prod_core.compiled.MODULES`` is compiled from a copy of its source, and the
result is named after the source's SHA-256: a module whose source changed since is imported from
its ``.py`` again until the next build. A module already built from its current source is kept.
Exit 0 when every module is built; 2 when Cython, setuptools or a C compiler is missing (the
message says which; the runner then stays pure Python); 1 when a module fails to compile.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

os.environ["CRUPTO_COMPILED"] = "0"  # this process imports prod_core from source, never a build
from prod_core import compiled  # noqa: E402


def _tools() -> str:
    """What is missing to build ('' when nothing)."""
    try:
        import Cython  # noqa: F401
        import setuptools  # noqa: F401
    except ImportError as exc:
        return f"{exc.name} is not installed (pip install -e '.[compiled]')"
    if not (shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")):
        return "no C compiler (cc/gcc) on PATH"
    return ""


def _build(todo: list[str], work: Path, jobs: int) -> None:
    """Compile ``todo`` (module names) from copies of their sources staged under ``work``."""
    from Cython.Build import cythonize
    from setuptools import Extension
    from setuptools import setup as st_setup

    src_root = work / "src"
    exts = []
    for name in todo:
        parts = name.split(".")
        staged = src_root.joinpath(*parts).with_suffix(".py")
        staged.parent.mkdir(parents=True, exist_ok=True)
        for depth in range(1, len(parts)):  # packages, so Cython names the module as Python does
            (src_root.joinpath(*parts[:depth]) / "__init__.py").touch()
        shutil.copyfile(compiled.source_of(name), staged)
        exts.append((name, Extension(name, [str(staged)], extra_compile_args=list(compiled.COMPILE_ARGS))))
    for name in compiled.MODULES:  # every module's C types (an augmenting .pxd), for its own build and cimports
        if compiled.declarations_of(name).is_file():
            parts = name.split(".")
            staged = src_root.joinpath(*parts).with_suffix(".pxd")
            staged.parent.mkdir(parents=True, exist_ok=True)
            for depth in range(1, len(parts)):
                (src_root.joinpath(*parts[:depth]) / "__init__.py").touch()
            shutil.copyfile(compiled.declarations_of(name), staged)
    for typed in (False, True):
        group = [ext for name, ext in exts if (name in compiled.TYPED) == typed]
        if not group:
            continue
        directives = {**compiled.DIRECTIVES, "annotation_typing": typed, "infer_types": typed or None}
        cwd = os.getcwd()
        os.chdir(work)  # setuptools reads a pyproject.toml in the working directory: not the project's
        try:
            st_setup(
                name="crupto-compiled", script_args=["-q", "build_ext", "--build-lib", str(work / "lib"),
                                                     "--build-temp", str(work / "tmp"), "--parallel", str(jobs)],
                ext_modules=cythonize(group, compiler_directives=directives, quiet=True, nthreads=0),
            )
        finally:
            os.chdir(cwd)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help=f"output directory (default: {compiled.build_dir()})")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallel C compiles")
    args = ap.parse_args(argv)
    out = Path(args.out) if args.out else compiled.build_dir()
    missing = _tools()
    if missing:
        print(f"build_compiled: cannot build: {missing}; the hot modules stay pure Python", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    wanted = {name: compiled.artifact_name(name, compiled.build_input(name)) for name in compiled.MODULES}
    todo = [name for name, file in wanted.items() if not (out / file).is_file()]
    if todo:
        with tempfile.TemporaryDirectory(prefix="crupto-cython-") as tmp:
            work = Path(tmp)
            try:
                _build(todo, work, max(1, args.jobs))
            except (Exception, SystemExit) as exc:  # setuptools reports a failed compile as SystemExit
                print(f"build_compiled: the build failed: {exc}", file=sys.stderr)
                return 1
            for name in todo:
                parts = name.split(".")
                built = work.joinpath("lib", *parts[:-1]) / f"{parts[-1]}{compiled.SUFFIX}"
                if not built.is_file():
                    print(f"build_compiled: {name}: no {built.name} after the build", file=sys.stderr)
                    return 1
                shutil.move(str(built), out / wanted[name])
    keep = set(wanted.values())
    for stale in out.glob(f"prod_core.*{compiled.SUFFIX}"):  # builds of sources that have changed since
        if stale.name not in keep:
            stale.unlink()
    print(f"build_compiled: {len(wanted)} modules in {out} ({len(todo)} compiled now, "
          f"{len(wanted) - len(todo)} already built from the same source)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
