"""A disk that fills up while an artifact is written (a real tmpfs the test mounts as the artifact
root): nothing half-written is published or left behind, the error is the one-line disk-full message,
and once there is room the same write publishes the same bytes as on a roomy disk."""
from __future__ import annotations

import errno
import os
import subprocess

import numpy as np
import pytest

from flows.errors import expected_message
from tasks.catalog import ArtifactStore
from tests_helpers import small_tmpfs

STAGE, KEY = "embed", "k0123456789abcdef"
ARRAY = np.random.default_rng(0).standard_normal((1000, 384)).astype(np.float32)  # 1.5 MB


@pytest.fixture
def small_disk(tmp_path):
    with small_tmpfs(tmp_path / "small", "1m") as mount:
        yield mount


def write(store: ArtifactStore, fill_to: int | None = None) -> None:
    """An embed-like artifact: the features, an index; ``fill_to``: first pad the disk to leave
    that many bytes free, so that the disk fills while the manifest is written."""
    with store.create(STAGE, KEY, config={"seed": 0}) as folder:
        if fill_to is not None:
            free = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize
            (folder / "pad.bin").write_bytes(b"\0" * max(0, free - fill_to))
        np.save(folder / "features.npy", ARRAY[:20] if fill_to is not None else ARRAY)
        (folder / "index.json").write_text('{"rows": 1000}')


def leftovers(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("when", ["data", "manifest"])
def test_a_full_disk_publishes_nothing_and_a_rerun_with_room_publishes_the_same_bytes(small_disk, tmp_path, when):
    store = ArtifactStore(small_disk / "artifacts")
    with pytest.raises(OSError) as caught:
        write(store, fill_to=None if when == "data" else 16)
    # ENOSPC from a plain write; numpy's np.save reports a short write without an errno
    assert caught.value.errno == errno.ENOSPC or "requested and" in str(caught.value)
    assert expected_message(caught.value).startswith("no space left on the device")
    assert not store.location(STAGE, KEY).exists()
    assert leftovers(small_disk) == []  # no temp folder, no partial file, no stamp
    assert store.artifacts() == [] and all(check.ok for check in store.verify_all())

    subprocess.run(["mount", "-o", "remount,size=8m", str(small_disk)], check=True)  # room made
    write(store)
    roomy = ArtifactStore(tmp_path / "roomy")
    write(roomy)
    published, reference = store.open(STAGE, KEY), roomy.open(STAGE, KEY)
    assert published.manifest["files"] == reference.manifest["files"]  # same files, sizes and sha256
    assert np.array_equal(np.load(published.path / "features.npy"), ARRAY)
    assert all(check.ok for check in store.verify_all())
