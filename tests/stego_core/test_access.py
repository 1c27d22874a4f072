"""The data-access layer: every way of reading a table gives the rows an in-memory array would."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from stego_core.access import (
    BatchTable,
    ConcatRows,
    MappedRows,
    any_labelled,
    materialize,
    open_table,
    read_index,
    read_rows,
    sample_tokens,
)
from stego_core.budget import GB, DiskSpaceError, MemoryBudget, human_bytes, require_disk


class CountingTable:
    """A numpy array that records which rows were read (to prove what a reader touches)."""

    def __init__(self, array: np.ndarray) -> None:
        self.array, self.read = array, []
        self.shape, self.dtype = array.shape, array.dtype

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, key):
        rows = np.arange(len(self.array))[key]
        self.read.extend(np.atleast_1d(rows).tolist())
        return self.array[key]


@pytest.fixture
def parts():
    rng = np.random.default_rng(0)
    return [rng.standard_normal((n, 3, 2, 2)).astype(np.float16) for n in (4, 1, 6)]


def test_shards_read_as_one_table(parts):
    whole = np.concatenate(parts)
    table = ConcatRows(parts)
    assert table.shape == whole.shape and len(table) == 11 and table.dtype == np.float16
    for key in (slice(None), slice(2, 9), slice(4, 5), slice(9, 30), slice(0, 11, 3)):
        np.testing.assert_array_equal(table[key], whole[key])
    idx = np.array([10, 0, 4, 4, 5, 3, -1])
    np.testing.assert_array_equal(table[idx], whole[idx])
    np.testing.assert_array_equal(np.asarray(table), whole)
    np.testing.assert_array_equal(table[4], whole[4])
    np.testing.assert_array_equal(table[-1], whole[-1])
    with pytest.raises(IndexError):
        table[np.array([11])]
    with pytest.raises(TypeError, match="a row, a slice or an integer array"):
        table[np.array([0.5])]


def test_shards_of_other_settings_are_refused(parts):
    with pytest.raises(ValueError, match="shard 1 holds rows .*different settings"):
        ConcatRows([parts[0], parts[1].astype(np.float32)])
    with pytest.raises(ValueError, match="at least one part"):
        ConcatRows([])


def test_mapped_rows_are_the_function_of_the_whole_table(parts):
    source = np.concatenate(parts)
    weight = np.arange(12, dtype=np.float32).reshape(4, 3)
    fn = lambda x: np.einsum("dc,bchw->bdhw", weight, x.astype(np.float32))  # noqa: E731 (pointwise, like a head)
    table = MappedRows(source, fn, row_shape=(4, 2, 2), dtype=np.float32, batch=3)
    whole = fn(source)
    np.testing.assert_array_equal(table[:], whole)
    np.testing.assert_array_equal(table[np.array([7, 1, 1, 10])], whole[[7, 1, 1, 10]])
    np.testing.assert_array_equal(table[2:8], whole[2:8])
    bad = MappedRows(source, lambda x: x[:, :1], row_shape=(4, 2, 2), dtype=np.float32)
    with pytest.raises(ValueError, match="gave .* for 3 rows"):
        bad[0:3]


def test_rows_come_back_in_the_order_asked_each_read_once():
    array = np.arange(20, dtype=np.int64).reshape(10, 2)
    table = CountingTable(array)
    idx = np.array([7, 2, 7, 0, 9])
    np.testing.assert_array_equal(read_rows(table, idx), array[idx])
    assert table.read == [0, 2, 7, 9]


@pytest.mark.parametrize("max_tokens", [None, 10_000, 37, 5])
def test_token_sample_is_the_in_memory_pick(max_tokens):
    rng = np.random.default_rng(1)
    maps = rng.standard_normal((23, 4, 3, 5)).astype(np.float16)
    everything = maps.astype(np.float32).transpose(0, 2, 3, 1).reshape(-1, 4)
    total = len(everything)
    if max_tokens is not None and total > max_tokens:
        chosen = np.sort(np.random.default_rng(3).choice(total, size=max_tokens, replace=False))
        expected = everything[chosen]
    else:
        expected = everything
    np.testing.assert_array_equal(sample_tokens(maps, max_tokens=max_tokens, seed=3, batch=4), expected)


def test_blocks_without_a_sampled_token_are_not_read():
    maps = np.zeros((400, 2, 1, 1), dtype=np.float32)
    table = CountingTable(maps)
    sample_tokens(table, max_tokens=3, seed=0, batch=10)
    assert len(table.read) <= 30  # at most the three blocks holding a sampled token


def test_any_labelled_stops_at_the_first_labelled_block():
    labels = np.full((50, 2, 2), 255, dtype=np.uint8)
    assert not any_labelled(labels)
    labels[3, 0, 0] = 1
    table = CountingTable(labels)
    assert any_labelled(table, batch=5)
    assert table.read == list(range(5))


def test_batches_from_a_resident_copy_equal_the_streamed_ones(parts):
    table = np.concatenate(parts)
    resident = BatchTable(table, "cpu", MemoryBudget())
    streamed = BatchTable(table, "cpu", MemoryBudget(host_bytes=8))
    assert resident.tensor is not None and "resident in host memory" in resident.placement
    assert streamed.tensor is None and "over budget" in streamed.placement
    forced = BatchTable(table, "cpu", MemoryBudget(placement="stream"))
    assert forced.tensor is None and "memory.placement=stream" in forced.placement
    idx = np.array([3, 3, 10, 0])
    for b in (streamed, forced):
        out = b.gather(idx)
        assert out.dtype == torch.float32
        assert torch.equal(out, resident.gather(idx))
    assert torch.equal(resident.gather(idx), torch.from_numpy(table[idx].astype(np.float32)))


def test_an_on_demand_table_is_never_copied(parts):
    table = MappedRows(np.concatenate(parts), lambda x: x, row_shape=(3, 2, 2), dtype=np.float16, what="recomputed")
    batches = BatchTable(table, "cpu", MemoryBudget(placement="resident"))
    assert batches.tensor is None and "computed for each batch (recomputed)" in batches.placement


def test_materialised_rows_are_the_same_in_memory_and_in_a_scratch_file(parts, tmp_path):
    table = MappedRows(np.concatenate(parts), lambda x: x.astype(np.float32) * 2, row_shape=(3, 2, 2), dtype=np.float32)
    held, where = materialize(table, budget=MemoryBudget(), scratch=tmp_path, what="code")
    spilled, where_spilled = materialize(table, budget=MemoryBudget(host_bytes=16), scratch=tmp_path, what="code")
    assert isinstance(held, np.ndarray) and not isinstance(held, np.memmap) and "resident" in where
    assert isinstance(spilled, np.memmap) and "scratch file" in where_spilled and (tmp_path / "code.npy").is_file()
    np.testing.assert_array_equal(held, spilled)
    with pytest.raises(ValueError, match="over the host memory budget and no scratch folder"):
        materialize(table, budget=MemoryBudget(host_bytes=16), what="code")


def test_disk_is_planned_before_writing(tmp_path):
    require_disk(tmp_path, 1024, "a small stage")
    with pytest.raises(DiskSpaceError, match=r"the embed stage needs .* TB of disk at .* but only .* free; .*--artifact-root.*recompute"):
        require_disk(tmp_path, 8 * 1024 ** 6, "the embed stage", hint="or set train.features=recompute")


def test_budget_rules():
    budget = MemoryBudget(host_bytes=GB, device_bytes=2 * GB)
    assert budget.resident(GB, "cpu")[0] and not budget.resident(GB + 1, "cpu")[0]
    assert budget.limit("cuda") == 2 * GB and budget.limit("cpu") == GB
    assert MemoryBudget(placement="resident").resident(1e15)[0]
    with pytest.raises(ValueError, match="memory.placement"):
        MemoryBudget(placement="sometimes")
    with pytest.raises(ValueError, match="> 0 bytes"):
        MemoryBudget(host_bytes=0)
    assert human_bytes(512) == "512 B" and human_bytes(1536) == "1.5 KB" and human_bytes(3 * GB) == "3.0 GB"


def test_sharded_folders_open_as_one(tmp_path, parts):
    import json

    folders = []
    for i, part in enumerate(parts):
        folder = tmp_path / "embed" / f"k{i}"
        folder.mkdir(parents=True)
        np.save(folder / "features.npy", part)
        (folder / "index.json").write_text(json.dumps([{"stem": f"{i}-{j}"} for j in range(len(part))]))
        folders.append(folder)
    joined = tmp_path / "embed" / "joined"
    joined.mkdir()
    (joined / "shards.json").write_text(json.dumps({"parts": [f"../k{i}" for i in range(3)]}))
    np.testing.assert_array_equal(np.asarray(open_table(joined, "features.npy")), np.concatenate(parts))
    assert [r["stem"] for r in read_index(joined)][:5] == ["0-0", "0-1", "0-2", "0-3", "1-0"]
    assert open_table(joined, "features_flip.npy", required=False) is None
    with pytest.raises(FileNotFoundError, match="labels.npy is missing"):
        open_table(joined, "labels.npy")
