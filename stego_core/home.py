"""The project's home folder: ``$STEGO_HOME``, default ``~/.cache/stego``.

It holds converted weights (``weights/``), the artifact cache (``artifacts/``) and the local MLflow
store (``mlflow.db``). One place decides where it is.
"""
from __future__ import annotations

import os
from pathlib import Path


def stego_home() -> Path:
    return Path(os.environ.get("STEGO_HOME") or Path.home() / ".cache" / "stego").expanduser()
