"""The optional compiled build of the replay's hot modules (Cython).

``make compiled`` (``scripts/build_compiled.py``) compiles the modules in ``MODULES`` with Cython
into ``build/compiled/`` (``CRUPTO_COMPILED_DIR`` to put it elsewhere). Each file there is named
after the module and the SHA-256 of the exact source it was built from, for example
``prod_core.runner.fastlane-3f2a...cpython-311-x86_64-linux-gnu.so`` (the build's flags and
directives are hashed with it: ``BUILD_TAG``). At import, a finder on
``sys.meta_path`` (``install``, called by ``prod_core/__init__``) hashes a listed module's
source and loads the compiled file of that hash when there is one; otherwise the module is
imported from its ``.py`` as always. So an edit of a source file can never run stale compiled
code: it just goes back to Python until the next build.

The compiled modules are the same Python source: same classes, functions and results (the
suite's ``tests/runner/test_compiled.py`` compares a parity replay's whole database with and
without them). ``prod_core.runner.fastlane`` is built with its annotations as C types (its
quiet-bar loop does float arithmetic on C doubles); the others keep Python objects, except where a
``.pxd`` beside the module declares its classes as extension types (Cython's "augmenting" .pxd,
which Python never reads): the broker and its working orders (``execution/paper.pxd``), the
pipeline (``runner/pipeline.pxd``), the governance state (``risk/ledger.pxd``), ``Bar``
(``domain/types.pxd``) and the live metrics (``telemetry/live.pxd``), with their fields at fixed
offsets and their hot methods ``cpdef``; the clean-bar test takes a typed ``Bar``
(``feeds/hygiene.pxd``). The
modules with a ``.pxd`` cimport each other's types, so they are one group: each one's file is keyed
by the sources and declarations of all of them (``build_input``), and the finder loads them all or
none (a compiled pipeline cannot import a broker that came from its ``.py``).

``CRUPTO_COMPILED=0`` turns the finder off (pure Python even with a build present).
"""

from __future__ import annotations

import hashlib
import os
import sys
from importlib.machinery import EXTENSION_SUFFIXES, ExtensionFileLoader, ModuleSpec
from importlib.util import spec_from_file_location
from pathlib import Path

MODULES: tuple[str, ...] = (
    "prod_core.runner.fastlane",
    "prod_core.runner.pipeline",
    "prod_core.execution.paper",
    "prod_core.execution.fills",
    "prod_core.account.journal",
    "prod_core.account.margin",
    "prod_core.risk.ledger",
    "prod_core.storage.sqlite",
    "prod_core.telemetry.live",
    "prod_core.risk.sizing",
    "prod_core.portfolio.limits",
    "prod_core.execution.rules",
    "prod_core.feeds.hygiene",
    "prod_core.feeds.stream",
    "prod_core.feeds.replay",
    "prod_core.domain.types",
)
# built with ``annotation_typing``: annotated locals are C types (the module's code is written for it)
TYPED: frozenset[str] = frozenset({"prod_core.runner.fastlane"})

# How every module is built (scripts/build_compiled.py), and so part of every file's key (``BUILD_TAG``):
# no fused multiply-add (a*b+c rounded once would differ from Python's two roundings); the TYPED
# modules also get ``annotation_typing`` and ``infer_types``
COMPILE_ARGS: tuple[str, ...] = ("-ffp-contract=off",)
DIRECTIVES: dict[str, object] = {"language_level": 3, "binding": True}
BUILD_TAG = f"crupto-compiled: {sorted(DIRECTIVES.items())} {COMPILE_ARGS}\n".encode()

PACKAGE_DIR = Path(__file__).resolve().parent
SUFFIX = EXTENSION_SUFFIXES[0]


def enabled_by_env() -> bool:
    return os.environ.get("CRUPTO_COMPILED", "1").strip().lower() not in ("0", "false", "no", "off")


def build_dir() -> Path:
    """Where the compiled files are (and where ``scripts/build_compiled.py`` puts them)."""
    configured = os.environ.get("CRUPTO_COMPILED_DIR", "").strip()
    return Path(configured) if configured else PACKAGE_DIR.parent / "build" / "compiled"


def source_of(name: str) -> Path:
    """The ``.py`` file of module ``name`` (one of ``MODULES``) in this tree."""
    parts = name.split(".")
    return PACKAGE_DIR.joinpath(*parts[1:]).with_suffix(".py")


def declarations_of(name: str) -> Path:
    """The Cython declarations (``.pxd``) beside module ``name``'s source (it may have none)."""
    return source_of(name).with_suffix(".pxd")


def build_input(name: str) -> bytes:
    """What the compiled file of module ``name`` is built from: its source, and when it has a ``.pxd``
    the sources and declarations of every listed module that has one. Those modules share their
    extension types' layouts (``cimport``): a change to any of them must leave all of them
    uncompiled until the next build, never one compiled against another's stale declarations."""
    source = source_of(name).read_bytes()
    if not declarations_of(name).is_file():
        return source
    parts = [source]
    for other in MODULES:
        pxd = declarations_of(other)
        if pxd.is_file():
            parts += [other.encode(), source_of(other).read_bytes(), pxd.read_bytes()]
    return b"\0".join(parts)


def artifact_name(name: str, source: bytes) -> str:
    """The compiled file's name for module ``name`` built from ``source``."""
    return f"{name}-{hashlib.sha256(BUILD_TAG + source).hexdigest()[:16]}{SUFFIX}"


class _Finder:
    """Finds the compiled file of a listed module whose source hash it was built from."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def find_spec(self, fullname: str, path=None, target=None) -> ModuleSpec | None:
        if fullname not in MODULES:
            return None
        try:
            source = build_input(fullname)
        except OSError:
            return None
        so = self.directory / artifact_name(fullname, source)
        if not so.is_file():
            return None
        if declarations_of(fullname).is_file() and not self._typed_group_built():
            return None  # one of the modules it cimports would come from its .py: a C type it could not import
        return spec_from_file_location(fullname, so, loader=ExtensionFileLoader(fullname, str(so)))

    def _typed_group_built(self) -> bool:
        """Every listed module with a ``.pxd`` has its compiled file here (they load all or none)."""
        for name in MODULES:
            if declarations_of(name).is_file():
                try:
                    so = self.directory / artifact_name(name, build_input(name))
                except OSError:
                    return False
                if not so.is_file():
                    return False
        return True

    def invalidate_caches(self) -> None:
        pass


def install() -> bool:
    """Put the finder on ``sys.meta_path`` when a build directory exists (and the env allows it)."""
    if not enabled_by_env():
        return False
    directory = build_dir()
    if not directory.is_dir() or any(isinstance(f, _Finder) for f in sys.meta_path):
        return False
    sys.meta_path.insert(0, _Finder(directory))
    return True


def in_use() -> list[str]:
    """The listed modules imported so far from their compiled files."""
    out = []
    for name in MODULES:
        module = sys.modules.get(name)
        if module is not None and str(getattr(module, "__file__", "")).endswith(SUFFIX):
            out.append(name)
    return out


def describe() -> str:
    """One line for the benchmark's output: which build the hot modules came from."""
    for name in MODULES:  # import them all, so the line speaks for every one of them
        __import__(name)
    used = in_use()
    if not used:
        return f"pure Python (no compiled build in use; `make compiled` builds one in {build_dir()})"
    return f"compiled with Cython: {len(used)} of {len(MODULES)} hot modules ({build_dir()})"
