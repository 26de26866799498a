"""Logging to stdout and logs/<run_id>.log, with secrets redacted."""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path

_SECRET_ENV = ("EXCHANGE_API_KEY", "EXCHANGE_API_SECRET", "TELEGRAM_BOT_TOKEN")


class RedactSecrets(logging.Filter):
    """Replace the values of known secret variables in every log record."""

    def __init__(self) -> None:
        super().__init__()
        values = [os.environ.get(k, "") for k in _SECRET_ENV]
        values = [v for v in values if len(v) >= 4]
        self._pattern = re.compile("|".join(re.escape(v) for v in values)) if values else None

    def filter(self, record: logging.LogRecord) -> bool:
        if self._pattern is not None:
            message = record.getMessage()
            if self._pattern.search(message):
                record.msg = self._pattern.sub("***", message)
                record.args = ()
        return True


def setup_logging(level: str, logs_dir: Path, run_id: str) -> Path:
    logs_dir.mkdir(parents=True, exist_ok=True)
    path = logs_dir / f"{run_id}.log"
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    redact = RedactSecrets()
    for handler in (logging.StreamHandler(sys.stdout), logging.FileHandler(path, encoding="utf-8")):
        handler.setFormatter(fmt)
        handler.addFilter(redact)
        root.addHandler(handler)
    root.setLevel(level)
    return path
