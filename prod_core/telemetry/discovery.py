"""Prometheus file-based service discovery of the runners.

Each paper runner keeps ``<PROMETHEUS_SD_DIR>/<account>.json`` current: one target (its
exporter, ``<PROMETHEUS_SD_HOST>:<port>``) with the labels ``account`` and ``run_id``.
Prometheus (``file_sd_configs`` in configs/prometheus/prometheus.yml) watches the directory,
so every runner of every account is scraped with its account as a target label. The file is
written atomically (a temporary file renamed over it) and removed at a clean stop; a runner
that dies leaves it behind on purpose, so that its target shows as down and the alerts fire.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def sd_path(directory: str | Path, account: str) -> Path:
    return Path(directory) / f"{account}.json"


def sd_entry(host: str, port: int, account: str, run_id: str) -> list[dict]:
    return [{"targets": [f"{host}:{port}"], "labels": {"account": account, "run_id": run_id}}]


def write_sd_file(directory: str | Path, account: str, *, host: str, port: int, run_id: str) -> Path:
    """Write (atomically) the file_sd file of ``account``; returns its path."""
    path = sd_path(directory, account)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(sd_entry(host, port, account, run_id), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def remove_sd_file(directory: str | Path, account: str, run_id: str) -> bool:
    """Remove the file of ``account`` if it still names ``run_id`` (a newer runner's file is kept)."""
    path = sd_path(directory, account)
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not any((e.get("labels") or {}).get("run_id") == run_id for e in entries if isinstance(e, dict)):
        return False
    try:
        path.unlink()
    except OSError:
        return False
    return True
