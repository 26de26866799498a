"""Replay sweeps on Ray: one replay per parameter combination (and per symbol and/or date window when asked).

A sweep task is a single replay, run exactly as an operator runs one
(``python -m prod_core.runner --feed replay --config-dir ... --data ...``) in a scratch
directory of the worker, with its own SQLite file; its figures are read back from that file
by the same ``run_summary`` a report uses. So a sweep's result for a combination is the
single replay's result, by construction.

The driver validates every combination before anything runs (a bad grid names the file,
field and value), ships the candle files and the config once through Ray's object store
(workers need no shared disk), and collects the results as they finish, with a progress
bar. A task lost to a worker failure is retried by Ray (``max_retries``); a task that fails
in its own code (a replay exiting non-zero) is not retried and is reported, never dropped.

Date windows (``split: window`` or ``split: [symbol, window]`` with ``window_days: N``): the
driver cuts the candle files into consecutive UTC windows of N days by bar timestamp, from the
UTC midnight of the first bar of all the data (the last window may be shorter), and ships each
window's rows as a file of the same name (CSV or Parquet, as given); the task runs the runner
on that file, so a window's result is the single replay's on a file holding only those rows.
A window (or symbol) without rows gets no task.

Local Ray by default (``workers`` processes); a cluster when ``RAY_ADDRESS`` is set.
"""

from __future__ import annotations

import copy
import datetime as dt
import io
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from prod_core.configs import ConfigError, ConfigLoader

__all__ = ["RayUnavailable", "SweepError", "SweepPlan", "SweepTask", "load_grid", "plan_sweep", "run_sweep", "run_task"]

# What a task reports: the run's figures as the report computes them.
RESULT_FIELDS = ("bars", "fills", "closed_trades", "win_rate", "expectancy_r", "profit_factor", "closed_r",
                 "pnl_cum_r_end", "max_dd_r", "equity_start", "equity_end", "pnl_usd", "fees_usd", "funding_usd",
                 "engine_s")
TASK_TIMEOUT_S = 3_600.0
# Test hook: a path; the first task to find it missing creates it and kills its own worker
# process, as a node failure would (Ray must retry the task elsewhere).
DIE_ONCE_ENV = "CRUPTO_SWEEP_DIE_ONCE"


class SweepError(Exception):
    """Bad input to a sweep (grid, data, config): the message names the value and what to do."""


@dataclass(frozen=True)
class SweepTask:
    """One replay of the sweep: its parameters, its symbol (split by symbol), its window and its inputs."""

    task_id: str
    params: dict[str, Any]
    symbol: str | None
    data_names: tuple[str, ...]  # keys of the shipped data files this replay reads ("<dir>/<file name>")
    governance_yaml: str  # the config's governance.yaml with this task's parameters
    window_start: str | None = None  # the window's first UTC day (ISO date), split by window
    window_end: str | None = None  # its last UTC day (inclusive; the last window ends at the last bar's day)


@dataclass
class SweepPlan:
    strategy: str
    grid: dict[str, list[Any]]
    tasks: list[SweepTask]
    config_files: dict[str, str]  # the config dir's top-level YAML files except governance.yaml
    data: dict[str, bytes] = field(repr=False, default_factory=dict)


# ----------------------------------------------------------------- planning
def load_grid(path: Path) -> dict[str, Any]:
    """The grid file: ``strategy`` (a name under governance.yaml strategies), ``params`` (name: list of
    values, or one value kept fixed), ``split`` (``none``, ``symbol``, ``window`` or the list
    ``[symbol, window]``) and ``window_days`` (days per window, with a window split)."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SweepError(f"--grid {path}: cannot read it ({exc.strerror or exc}); pass a YAML grid file") from exc
    except yaml.YAMLError as exc:
        raise SweepError(f"--grid {path}: not valid YAML ({exc})") from exc
    if not isinstance(raw, dict):
        raise SweepError(f"--grid {path}: expected a mapping with strategy, params and split")
    unknown = set(raw) - {"strategy", "params", "split", "window_days"}
    if unknown:
        raise SweepError(f"--grid {path}: unknown key(s) {', '.join(sorted(unknown))}; "
                         "allowed: strategy, params, split, window_days")
    strategy = raw.get("strategy")
    if not isinstance(strategy, str) or not strategy:
        raise SweepError(f"--grid {path}: strategy must name a strategy of governance.yaml, got {strategy!r}")
    params = raw.get("params") or {}
    if not isinstance(params, dict) or not params:
        raise SweepError(f"--grid {path}: params must map parameter names to lists of values, got {params!r}")
    grid: dict[str, list[Any]] = {}
    for name, values in params.items():
        values = values if isinstance(values, list) else [values]
        if not values:
            raise SweepError(f"--grid {path}: params.{name} is an empty list; give at least one value")
        grid[str(name)] = values
    split = raw.get("split", "none")
    parts = split if isinstance(split, list) else [split]
    if not parts or any(p not in ("none", "symbol", "window") for p in parts) or len(set(parts)) != len(parts) \
            or ("none" in parts and len(parts) > 1):
        raise SweepError(f"--grid {path}: split must be none, symbol, window or [symbol, window], got {split!r}")
    kinds = frozenset(p for p in parts if p != "none")
    window_days = raw.get("window_days")
    if "window" in kinds:
        if isinstance(window_days, bool) or not isinstance(window_days, int) or window_days < 1:
            raise SweepError(f"--grid {path}: window_days must be a whole number of days >= 1 with split: window, "
                             f"got {window_days!r}")
    elif window_days is not None:
        raise SweepError(f"--grid {path}: window_days: {window_days!r} is set but split has no window; "
                         "use split: window (or [symbol, window]) or drop window_days")
    return {"strategy": strategy, "grid": grid, "split": kinds, "window_days": window_days}


def _with_params(gov: dict[str, Any], strategy: str, params: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(gov)
    spec = out["strategies"][strategy]
    if spec is None:
        spec = out["strategies"][strategy] = {}
    if {"class", "params", "cls"} & set(spec):  # the full form: class + params
        spec.setdefault("params", {})
        spec["params"] = {**(spec["params"] or {}), **params}
    else:  # the short form of a built-in: the parameters themselves
        spec.update(params)
    return out


def _data_symbols(paths: list[Path], known: list[str]) -> dict[Path, str]:
    from prod_core.feeds.candles import symbol_from_filename

    out = {}
    for p in paths:
        try:
            out[p] = symbol_from_filename(p, known)
        except Exception as exc:
            raise SweepError(f"--data {p}: split: symbol needs one file per symbol named after it ({exc})") from exc
    return out


DAY_MS = 86_400_000


def _ts_ms(path: Path, raw: bytes) -> tuple[Any, Any]:
    """``(table, ts)``: the file's rows and their bar timestamps (int64 epoch ms, -1 when unreadable).

    CSV: ``table`` is ``(header line or None, data lines)``; Parquet: a pyarrow table."""
    import numpy as np

    from prod_core.feeds.candles import CandleFormatError, _column_map, normalize_ts

    if path.suffix.lower() in (".parquet", ".pq"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pq.read_table(io.BytesIO(raw))
        try:
            col = _column_map(table.column_names, path)[0][0]
        except CandleFormatError as exc:
            raise SweepError(f"--data {path}: cannot cut it into windows ({exc})") from exc
        ts = table.column(col)
        if pa.types.is_timestamp(ts.type):
            ts = ts.cast(pa.timestamp("ms", tz=ts.type.tz)).cast(pa.int64())
        arr = np.asarray(ts.cast(pa.float64()).fill_null(-1).to_numpy(zero_copy_only=False))
        return table, normalize_ts(np.where(np.isfinite(arr), arr, -1).astype(np.int64))
    lines = raw.decode("utf-8-sig").splitlines(keepends=True)
    first = next((i for i, ln in enumerate(lines) if ln.strip()), None)
    if first is None:
        return (None, []), np.zeros(0, dtype=np.int64)
    cells = lines[first].split(",")
    try:
        float(cells[0])
        header, body, col = None, lines[first:], 0  # no header: a Binance kline dump, open time first
    except ValueError:
        try:
            col = _column_map(cells, path)[0][0]
        except CandleFormatError as exc:
            raise SweepError(f"--data {path}: cannot cut it into windows ({exc})") from exc
        header, body = lines[first], lines[first + 1:]
    ts = np.full(len(body), -1, dtype=np.int64)
    for i, ln in enumerate(body):
        try:
            ts[i] = int(float(ln.split(",")[col].strip().strip('"')))
        except (ValueError, IndexError):
            pass
    return (header, body), normalize_ts(ts)


def _iso_day(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.timezone.utc).date().isoformat()


def cut_windows(files: dict[str, tuple[Path, bytes]], days: int) -> list[tuple[str, str, dict[str, bytes]]]:
    """The data cut into consecutive UTC windows of ``days`` days: ``(first day, last day, {name: bytes})``
    for every window holding rows, from the UTC midnight of the earliest bar of all files. A row
    without a readable timestamp is kept in the first window (the runner counts it as rejected)."""
    import numpy as np

    parsed = {name: _ts_ms(path, raw) for name, (path, raw) in files.items()}
    valid = [ts[ts >= 0] for _t, ts in parsed.values()]
    valid = [v for v in valid if v.size]
    if not valid:
        raise SweepError(f"--data {', '.join(str(p) for p, _ in files.values())}: no bar with a timestamp "
                         "to cut into windows")
    lo, hi = min(int(v.min()) for v in valid), max(int(v.max()) for v in valid)
    origin = lo - lo % DAY_MS
    span = days * DAY_MS
    out = []
    for k in range((hi - origin) // span + 1):
        start, end = origin + k * span, origin + (k + 1) * span
        chunk: dict[str, bytes] = {}
        for name, (table, ts) in parsed.items():
            keep = (ts >= start) & (ts < end)
            if k == 0:
                keep |= ts < 0
            if not (keep & (ts >= 0)).any():
                continue
            if isinstance(table, tuple):
                header, body = table
                chunk[name] = ((header or "") + "".join(ln for ln, m in zip(body, keep) if m)).encode("utf-8")
            else:
                import pyarrow.parquet as pq

                buf = io.BytesIO()
                pq.write_table(table.filter(np.asarray(keep)), buf)
                chunk[name] = buf.getvalue()
        if chunk:
            out.append((_iso_day(start), _iso_day(min(end - 1, hi)), chunk))
    return out


def plan_sweep(grid_path: Path, config_dir: Path, data: list[Path], *, load_data: bool = True) -> SweepPlan:
    """Every task of the sweep, each combination validated as the runner would load it."""
    spec = load_grid(grid_path)
    gov_path = config_dir / "governance.yaml"
    try:
        gov = yaml.safe_load(gov_path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SweepError(f"--config-dir {config_dir}: no governance.yaml there ({exc.strerror or exc})") from exc
    strategies = (gov or {}).get("strategies") or {}
    if spec["strategy"] not in strategies:
        raise SweepError(f"--grid {grid_path}: strategy {spec['strategy']!r} is not in {gov_path} "
                         f"(configured: {', '.join(strategies) or 'none'})")
    missing = [str(p) for p in data if not p.is_file()]
    if not data or missing:
        raise SweepError(f"--data: {', '.join(missing) or 'no file given'}: pass existing candle files (CSV or Parquet)")
    names = [p.name for p in data]
    if len(set(names)) != len(names):
        raise SweepError("--data: two files share a name; the workers receive files by name, rename one")
    config_files = {p.name: p.read_text(encoding="utf-8") for p in sorted(config_dir.glob("*.yaml"))
                    if p.name != "governance.yaml"}
    try:
        known = list(ConfigLoader(config_dir).load_symbols().names)
    except ConfigError as exc:
        raise SweepError(str(exc)) from exc
    groups: list[tuple[str | None, tuple[str, ...]]]
    if "symbol" in spec["split"]:
        by_symbol = _data_symbols(data, known)
        groups = [(sym, tuple(p.name for p in data if by_symbol[p] == sym)) for sym in sorted(set(by_symbol.values()))]
    else:
        groups = [(None, tuple(names))]
    # (window or None, {data key: bytes}); keys are "<dir>/<file name>": the runner reads the symbol off the name
    windows: list[tuple[tuple[str, str] | None, dict[str, bytes]]] = []
    if "window" in spec["split"]:
        for start, end, chunk in cut_windows({p.name: (p, p.read_bytes()) for p in data}, spec["window_days"]):
            windows.append(((start, end), {f"{start}/{n}": b for n, b in chunk.items()}))
    elif load_data:
        windows.append((None, {f"all/{p.name}": p.read_bytes() for p in data}))
    else:
        windows.append((None, {f"all/{p.name}": b"" for p in data}))
    keys = list(spec["grid"])
    tasks: list[SweepTask] = []
    with tempfile.TemporaryDirectory(prefix="crupto-sweep-check-") as tmp:
        for name, text in config_files.items():
            (Path(tmp) / name).write_text(text, encoding="utf-8")
        for i, values in enumerate(itertools.product(*(spec["grid"][k] for k in keys))):
            params = dict(zip(keys, values))
            text = yaml.safe_dump(_with_params(gov, spec["strategy"], params), sort_keys=False)
            (Path(tmp) / "governance.yaml").write_text(text, encoding="utf-8")
            try:
                ConfigLoader(Path(tmp)).load_governance()
            except ConfigError as exc:
                shown = json.dumps(params, sort_keys=True, default=str)
                raise SweepError(f"--grid {grid_path}: the combination {shown} is refused: "
                                 f"{str(exc).replace(str(Path(tmp) / 'governance.yaml'), str(gov_path))}") from exc
            for window, chunk in windows:
                for sym, files in groups:
                    keys_ = tuple(k for k in chunk if k.split("/", 1)[1] in files)
                    if not keys_:
                        continue  # this symbol has no rows in this window
                    tid = (f"{i:04d}" + (f"-{sym.replace('/', '').replace(':', '')}" if sym else "")
                           + (f"-{window[0]}" if window else ""))
                    tasks.append(SweepTask(tid, params, sym, keys_, text, *(window or (None, None))))
    plan = SweepPlan(spec["strategy"], spec["grid"], tasks, config_files)
    if load_data or "window" in spec["split"]:
        plan.data = {k: b for _w, chunk in windows for k, b in chunk.items()}
    return plan


# ------------------------------------------------------------------- a task
def _die_once_for_test() -> None:
    marker = os.environ.get(DIE_ONCE_ENV)
    if marker and not Path(marker).exists():
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.close(fd)
        os._exit(137)  # the worker process dies mid-task, as on a lost node


def run_task(task: SweepTask, data: dict[str, bytes], config_files: dict[str, str], *,
             journal: bool = False, python: str | None = None) -> dict[str, Any]:
    """One replay in a scratch directory: the runner as a subprocess, figures read back from its database."""
    _die_once_for_test()
    from prod_core.reports.report import run_summary
    from prod_core.storage import Storage

    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f"crupto-sweep-{task.task_id}-"))
    try:
        cfg = tmp / "configs"
        cfg.mkdir()
        for name, text in config_files.items():
            (cfg / name).write_text(text, encoding="utf-8")
        (cfg / "governance.yaml").write_text(task.governance_yaml, encoding="utf-8")
        files = []
        for key in task.data_names:  # "<dir>/<file name>": the file keeps its name (the runner reads the symbol off it)
            (tmp / key).parent.mkdir(parents=True, exist_ok=True)
            (tmp / key).write_bytes(data[key])
            files.append(str(tmp / key))
        run_id = f"sweep-{task.task_id}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ALERT_TEST_", "RAY_", DIE_ONCE_ENV))}
        env.update(ENV_FILE=str(tmp / "no.env"), DB_PATH=str(tmp / "sweep.db"), REPORTS_DIR=str(tmp / "reports"),
                   LOGS_DIR=str(tmp / "logs"), LOG_LEVEL="WARNING", CRUPTO_PROGRESS="0")
        cmd = [python or sys.executable, "-m", "prod_core.runner", "--feed", "replay", "--config-dir", str(cfg),
               "--port", "0", "--linger", "0", "--run-id", run_id, "--data", *files]
        proc = subprocess.run(cmd, env=env, cwd=str(tmp), capture_output=True, text=True, timeout=TASK_TIMEOUT_S)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-5:])
            raise RuntimeError(f"replay of task {task.task_id} exited {proc.returncode}: {tail}")
        engine_s = None
        for line in proc.stdout.splitlines():
            if line.startswith("replay: bars="):
                engine_s = float(line.split("engine_s=")[1].split()[0])
        with Storage(str(tmp / "sweep.db")) as storage:
            s = run_summary(storage, run_id)
            stopped = [e for e in storage.events(run_id) if e.get("kind") == "run_stopped"]
            rows = storage.query("SELECT * FROM journal WHERE run_id = ? ORDER BY seq", (run_id,)) if journal else []
        result: dict[str, Any] = {k: s.get(k) for k in RESULT_FIELDS if k in s}
        result["bars"] = (stopped[-1].get("fields") or {}).get("bars") if stopped else None
        result["engine_s"] = engine_s
        result.update(task_id=task.task_id, params=task.params, symbol=task.symbol, window_start=task.window_start,
                      window_end=task.window_end, status="ok", error="",
                      worker_pid=os.getpid(), wall_s=time.perf_counter() - t0)
        if journal:
            result["journal"] = rows
        return result
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------ driver
class RayUnavailable(SweepError):
    """Ray is not installed, or could not start or connect."""


def _init_ray(workers: int) -> Any:
    try:
        import ray
    except ImportError as exc:
        raise RayUnavailable("Ray is not installed: pip install 'crupto[sweep]' (or make test's dev extras)") from exc
    address = os.environ.get("RAY_ADDRESS")
    if not ray.is_initialized():
        try:
            if address:
                ray.init(address=address, log_to_driver=False)
            else:
                ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, configure_logging=False)
        except Exception as exc:  # bad address, socket path too long (RAY_TMPDIR), no space in /dev/shm ...
            where = f"the cluster at RAY_ADDRESS={address}" if address else "a local Ray"
            raise RayUnavailable(f"could not start {where}: {type(exc).__name__}: {exc}; check RAY_ADDRESS, or "
                                 "set RAY_TMPDIR to a short path (Ray's sockets need one under 107 bytes)") from exc
    return ray


def run_sweep(plan: SweepPlan, *, workers: int = 2, journal: bool = False, max_retries: int = 3,
              on_result: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Run every task on Ray; results in task order, failed tasks included (status ``failed``)."""
    ray = _init_ray(workers)
    remote = ray.remote(num_cpus=1, max_retries=max_retries, retry_exceptions=False)(run_task)
    # one object per distinct input (all the files, or one window's rows): a task fetches only its own
    data_refs: dict[tuple[str, ...], Any] = {}
    for t in plan.tasks:
        if t.data_names not in data_refs:
            data_refs[t.data_names] = ray.put({k: plan.data[k] for k in t.data_names})
    cfg_ref = ray.put(plan.config_files)
    pending = {remote.remote(t, data_refs[t.data_names], cfg_ref, journal=journal): t for t in plan.tasks}
    results: dict[str, dict[str, Any]] = {}
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        for ref in done:
            task = pending.pop(ref)
            try:
                result = ray.get(ref)
            except Exception as exc:  # the task's own failure (or retries exhausted): reported, never dropped
                cause = getattr(exc, "cause", None) or exc
                result = {"task_id": task.task_id, "params": task.params, "symbol": task.symbol,
                          "window_start": task.window_start, "window_end": task.window_end, "status": "failed",
                          "error": f"{type(cause).__name__}: {str(cause).strip().splitlines()[-1][:500]}"}
            results[task.task_id] = result
            if on_result is not None:
                on_result(result)
    return [results[t.task_id] for t in plan.tasks]
