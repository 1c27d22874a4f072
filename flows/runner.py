"""How a flow calls a stage task: its view of the config, its inputs, the store, the unkeyed settings."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from stego_core.config import ExperimentConfig
from tasks.catalog import artifact_key
from tasks.remote_store import open_store
from tasks.views import run_settings, stage_view


class StageRunner:
    """Calls stage tasks for one experiment on one artifact store.

    ``runner(task, stage, inputs, of=cfg, **args)`` calls ``task`` with ``stage``'s view of ``of`` (the
    experiment, or a variant of it such as the raw baseline's) and the stage arguments ``args`` (keyed),
    the non-empty ``inputs``, the store and the unkeyed settings; it returns the task's ref with ``path``
    made a folder on this machine (a ref computed, or cached by Prefect, on another worker names that
    worker's folder; a remote store is read back here).
    """

    def __init__(self, cfg: ExperimentConfig, store_root: str) -> None:
        self.cfg, self.store_root = cfg, store_root
        self.store = open_store(store_root)
        self.settings = run_settings(cfg)

    def __call__(self, task: Any, stage: str, inputs: dict[str, str | None], of: ExperimentConfig | None = None,
                 **args: Any) -> dict:
        ref = task(config=stage_view(stage, of or self.cfg, **args), inputs=_present(inputs),
                   store_root=self.store_root, settings=self.settings)
        if not Path(ref["path"]).is_dir():
            ref = {**ref, "path": str(self.store.open(ref["stage"], ref["key"]).path)}
        return ref

    def key(self, stage: str, inputs: dict[str, str | None], of: ExperimentConfig | None = None, **args: Any) -> str:
        """The artifact key the same call would compute (without running anything)."""
        return artifact_key(stage, stage_view(stage, of or self.cfg, **args), _present(inputs))


def _present(inputs: dict[str, str | None]) -> dict[str, str]:
    return {name: key for name, key in inputs.items() if key}
