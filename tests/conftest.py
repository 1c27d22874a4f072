"""Shared fixtures: an artifact store in a tmp folder, one Prefect test server, the CamVid data root.

Prefect is imported inside the fixtures, so catalog-only tests never pay for it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tasks.catalog import ArtifactStore


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    """An empty artifact store under this test's tmp folder."""
    return ArtifactStore(tmp_path / "artifacts")


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One temporary Prefect server (SQLite) shared by the session (~10-20 s to start on 2 cores).

    PREFECT_HOME and PREFECT_LOCAL_STORAGE_PATH point into a tmp folder (set both in the process
    environment, which the server subprocess inherits, and in Prefect's settings context, which
    this process already loaded); analytics are off. Yields the result-storage folder.
    """
    from prefect.settings import (
        PREFECT_HOME,
        PREFECT_LOCAL_STORAGE_PATH,
        PREFECT_SERVER_ANALYTICS_ENABLED,
        temporary_settings,
    )
    from prefect.testing.utilities import prefect_test_harness

    base = tmp_path_factory.mktemp("prefect")
    home, results = base / "home", base / "results"
    home.mkdir()
    results.mkdir()
    patch = pytest.MonkeyPatch()
    patch.setenv("PREFECT_HOME", str(home))
    patch.setenv("PREFECT_LOCAL_STORAGE_PATH", str(results))
    patch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    updates = {
        PREFECT_HOME: str(home),
        PREFECT_LOCAL_STORAGE_PATH: str(results),
        PREFECT_SERVER_ANALYTICS_ENABLED: False,
    }
    try:
        with temporary_settings(updates=updates), prefect_test_harness(server_startup_timeout=90):
            yield results
    finally:
        patch.undo()


@pytest.fixture
def no_run_logger() -> Iterator[None]:
    """Lets ``task.fn(...)`` call ``get_run_logger()`` outside a flow run (unit tests of wrappers)."""
    from prefect.logging import disable_run_logger

    with disable_run_logger():
        yield


@pytest.fixture(scope="session")
def camvid_root() -> Path:
    """The shared data root holding CamVid (``$STEGO_DATA_ROOT`` or ``../shared/data``)."""
    import os

    root = Path(os.environ.get("STEGO_DATA_ROOT", Path(__file__).resolve().parents[2] / "shared" / "data"))
    if not (root / "camvid" / "images" / "train").is_dir():
        pytest.fail(f"CamVid not found under {root}; set STEGO_DATA_ROOT to the folder holding camvid/")
    return root


@pytest.fixture(scope="session")
def labelmefacade_root() -> Path:
    """The shared data root holding LabelMeFacade; the test is skipped where it is absent (research use only,
    so it is never shipped with the repository)."""
    import os

    root = Path(os.environ.get("STEGO_DATA_ROOT", Path(__file__).resolve().parents[2] / "shared" / "data"))
    if not (root / "labelmefacade" / "images" / "test").is_dir():
        pytest.skip(f"LabelMeFacade not found under {root} (set STEGO_DATA_ROOT to the folder holding labelmefacade/)")
    return root


@pytest.fixture(scope="session", autouse=True)
def isolated_tracking_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Runs made by tests are tracked in a temporary MLflow store, never in the user's home store.

    Tests that need their own store (a real `mlflow server`) set MLFLOW_TRACKING_URI themselves.
    """
    folder = tmp_path_factory.mktemp("mlflow")
    patch = pytest.MonkeyPatch()
    patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'mlflow.db'}")
    try:
        yield folder
    finally:
        patch.undo()
