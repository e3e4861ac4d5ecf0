"""The parquet-shard stream: coverage per epoch across readers, shuffling, bounded memory,
training from it (single process and 2 DDP processes), in-order validation, and the
catalog's lazy handle on a sharded split."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from kedro.io import DatasetError
from torch.utils.data import DataLoader

from recflow.datasets.sharded import ParquetParts, ShardedParquetDataset, ShardedSplitsDataset
from recflow.registry import MODELS
from recflow.training import TrainerConfig, fit, frame_to_tensors, predict
from recflow.training.parquet_shards import ParquetShards, train_input
from tests.helpers import tiny_spec
from tests.unit.training.test_distributed import N_CATS, N_ITEMS, N_USERS, SEQ, make_frame


@pytest.fixture(scope="module")
def spec():
    return tiny_spec(N_USERS, N_ITEMS, N_CATS, SEQ)


def write_shards(root: Path, sizes: list[int], row_group: int = 1000, seed: int = 0) -> Path:
    """Parts with consecutive row ids in `key_user` (part k holds one contiguous id range)."""
    root.mkdir(parents=True, exist_ok=True)
    frame = make_frame(sum(sizes), seed)
    frame["key_user"] = np.arange(len(frame))
    start = 0
    for k, n in enumerate(sizes):
        table = pa.Table.from_pandas(frame.iloc[start:start + n], preserve_index=False)
        pq.write_table(table, root / f"part-{k:05d}.parquet", row_group_size=row_group)
        start += n
    return root


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return write_shards(tmp_path_factory.mktemp("shards"), [700, 1300, 400, 900, 1000])


def ids(batches) -> np.ndarray:
    return np.concatenate([b.users for b in batches])


def test_every_row_once_per_epoch_across_ranks(shards, spec) -> None:
    stream = ParquetShards(shards, spec, batch_size=128, shuffle_buffer=600, read_rows=256)
    assert len(stream) == 4300
    for seed in (0, 1):
        per_rank = [list(stream.shard(r, 2).iter_batches(128, seed)) for r in range(2)]
        seen = [ids(b) for b in per_rank]
        assert np.array_equal(np.sort(np.concatenate(seen)), np.arange(4300))
        assert seen[0].size and seen[1].size
        for batches in per_rank:  # full batches except each reader's last
            assert all(len(b) == 128 for b in batches[:-1]) and 0 < len(batches[-1]) <= 128
    # the file-to-rank deal changes with the epoch seed
    assert {f.name for f in stream.files_for(0, 0, 2)} != {f.name for f in stream.files_for(1, 0, 2)}


def test_dataloader_workers_split_the_files(shards, spec) -> None:
    stream = ParquetShards(shards, spec, batch_size=100, shuffle_buffer=300, read_rows=200)
    loader = DataLoader(stream, batch_size=None, num_workers=2)
    assert np.array_equal(np.sort(ids(loader)), np.arange(4300))


def test_rows_are_shuffled_across_files(shards, spec) -> None:
    stream = ParquetShards(shards, spec, batch_size=64, shuffle_buffer=1000, read_rows=250)
    first, second = ids(stream.iter_batches(64, 0)), ids(stream.iter_batches(64, 1))
    assert not np.array_equal(first, second)
    assert np.array_equal(first, ids(stream.iter_batches(64, 0)))  # deterministic per seed
    bounds = np.cumsum([700, 1300, 400, 900, 1000])
    batches = list(stream.iter_batches(64, 0))
    mixed = [len(np.unique(np.searchsorted(bounds, b.users, side="right"))) for b in batches]
    assert max(mixed) >= 2  # rows of several files in one batch
    # within a batch, rows are not a run of consecutive ids (the buffer permuted them)
    assert np.mean([np.all(np.diff(np.sort(b.users)) == 1) for b in batches]) < 0.1


def test_batches_match_the_in_memory_tensors(shards, spec) -> None:
    frame = make_frame(4300, 0)
    frame["key_user"] = np.arange(4300)
    full = frame_to_tensors(frame, spec)
    stream = ParquetShards(shards, spec, batch_size=500, shuffle_buffer=800)
    for batch in stream.iter_batches(500, 3):
        rows = torch.from_numpy(batch.users)
        for name, values in batch.inputs.items():
            assert torch.equal(values, full.inputs[name][rows]), name
        for name, values in batch.labels.items():
            assert torch.equal(values, full.labels[name][rows]), name


def test_select_reads_only_the_model_columns(shards, spec) -> None:
    stream = ParquetShards(shards, spec).select(["item_id", "price"])
    assert "user_id" not in stream.columns and "hist_item_id__000" not in stream.columns
    batch = next(stream.iter_batches(32, 0))
    assert set(batch.inputs) == {"item_id", "price"}
    assert set(batch.labels) == {"click", "purchase"}


def test_bad_inputs_are_clear(shards, spec, tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="no \\*.parquet"):
        ParquetShards(tmp_path, spec)
    with pytest.raises(FileNotFoundError, match="not a directory"):
        ParquetShards(tmp_path / "missing", spec)
    bad = tmp_path / "bad"
    bad.mkdir()
    pq.write_table(pa.table({"key_user": [1], "user_id": [1]}), bad / "part-00000.parquet")
    with pytest.raises(KeyError, match="part-00000.parquet: missing column"):
        ParquetShards(bad, spec)


_PROBE = """
import gc, json, os, sys
from recflow.training import frame_to_tensors
from recflow.training.parquet_shards import ParquetShards
from tests.helpers import tiny_spec
from tests.unit.training.test_distributed import N_CATS, N_ITEMS, N_USERS, SEQ, make_frame

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

def growth(path):
    stream = ParquetShards(path, spec, batch_size=512, shuffle_buffer=4096, read_rows=2048)
    gc.collect()
    base = peak = rss()
    rows = 0
    for batch in stream.iter_batches(512, 0):
        rows += len(batch)
        peak = max(peak, rss())
    return peak - base, rows

spec = tiny_spec(N_USERS, N_ITEMS, N_CATS, SEQ)
small, large = sys.argv[1:3]
growth(small)  # warm-up: one-off allocator pools
out = {"large": growth(large), "small": growth(small)}
tensors = frame_to_tensors(make_frame(1000, 0), spec).inputs.values()
out["in_memory"] = sum(t.nbytes for t in tensors) * 500  # the 500k-row split as tensors
print(json.dumps(out))
"""


@pytest.mark.slow  # spawns processes
def test_peak_memory_does_not_grow_with_the_shard_count(tmp_path) -> None:
    """Measured in a fresh process: RSS growth in a long test session is allocator noise."""
    large = write_shards(tmp_path / "large", [25_000] * 20, row_group=5000)
    small = write_shards(tmp_path / "small", [25_000] * 2, row_group=5000)
    done = subprocess.run([sys.executable, "-c", _PROBE, str(small), str(large)], check=True,
                          capture_output=True, text=True, cwd=Path(__file__).parents[3])
    out = json.loads(done.stdout.strip().splitlines()[-1])
    (grow_large, rows_large), (grow_small, rows_small) = out["large"], out["small"]
    assert (rows_large, rows_small) == (500_000, 50_000)
    # the 500k-row split as column tensors is ~35 MB (~110 MB via pandas);
    # observed: large ~0.6 MB, small ~0 MB after the warm-up
    assert grow_large < out["in_memory"] / 10, out
    assert grow_large < grow_small + 4 * 2**20, out


def test_fit_trains_from_a_stream(shards, spec, tmp_path) -> None:
    valid = frame_to_tensors(make_frame(800, 9), spec)
    config = TrainerConfig(epochs=3, batch_size=128, lr=0.02, progress=False, shuffle_buffer=500)
    weights = []
    for _ in range(2):
        torch.manual_seed(0)
        model = MODELS.create("lr", spec, params={})
        train = train_input(shards, spec, config.shuffle_buffer)
        result = fit(model, train, valid, config)
        weights.append(model.state_dict())
        assert len(result.history) == 3 and result.history[-1]["valid_auc"] > 0.65
        assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    for key in weights[0]:  # the stream's seeds come from the trainer's generator
        assert torch.equal(weights[0][key], weights[1][key]), key


@pytest.mark.slow  # spawns processes
def test_two_ddp_processes_train_from_file_shards(shards, spec) -> None:
    valid = frame_to_tensors(make_frame(800, 9), spec)
    torch.manual_seed(0)
    model = MODELS.create("lr", spec, params={})
    init = {k: v.clone() for k, v in model.state_dict().items()}
    config = TrainerConfig(epochs=2, batch_size=128, lr=0.02, progress=False, workers=2)
    result = fit(model, ParquetShards(shards, spec, shuffle_buffer=500), valid, config)
    assert len(result.history) == 2
    assert result.history[-1]["valid_auc"] > 0.65
    assert any(not torch.equal(v, init[k]) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="has 1 parquet file.*trainer.workers is 2"):
        one = write_shards(shards.parent / "one", [100])
        fit(model, ParquetShards(one, spec), valid, config)


def test_validation_can_stream_in_order(spec, tmp_path) -> None:
    """A valid split in parquet parts scores exactly like the same rows in memory."""
    frame = make_frame(800, 9)
    parts = tmp_path / "valid"
    parts.mkdir()
    for k, rows in enumerate(np.array_split(np.arange(800), 3)):
        frame.iloc[rows].to_parquet(parts / f"part-{k:05d}.parquet", index=False)
    train = frame_to_tensors(make_frame(3000, 1), spec)
    config = TrainerConfig(epochs=2, batch_size=128, lr=0.02, progress=False)
    histories, scores = [], []
    for valid in (frame_to_tensors(frame, spec),
                  ParquetShards(ParquetParts(tuple(sorted(parts.glob("*")))), spec)):
        torch.manual_seed(0)
        model = MODELS.create("lr", spec, params={})
        histories.append(fit(model, train, valid, config).history)
        scores.append(predict(model, valid, batch_size=100))
    # same rows, same order (chunked by part, so float sums may differ in the last ulp)
    np.testing.assert_allclose(scores[0], scores[1], rtol=1e-6)
    for memory, streamed in zip(*histories, strict=True):
        assert memory["valid_auc"] == pytest.approx(streamed["valid_auc"], abs=1e-6)
        assert memory["valid_logloss"] == pytest.approx(streamed["valid_logloss"], rel=1e-6)
    stream = ParquetShards(parts, spec)
    assert np.array_equal(stream.label("click"), frame["label_click"].to_numpy(np.float32))
    assert np.array_equal(np.concatenate([b.users for b in stream.in_order(64)]),
                          frame["key_user"].to_numpy())
    with pytest.raises(KeyError, match="no label column 'label_ctcvr'"):
        stream.label("ctcvr")


# ---- the catalog's handle on a sharded split ----------------------------------------------
def test_sharded_dataset_loads_a_lazy_handle(shards, tmp_path) -> None:
    dataset = ShardedParquetDataset(path=str(tmp_path / "out"))
    with pytest.raises(DatasetError, match="no part-\\*.parquet files"):
        dataset.load()
    frame = make_frame(4300, 0)
    for rows in np.array_split(np.arange(4300), 4):
        dataset.save(frame.iloc[rows])
    dataset.save(frame.iloc[:0])  # empty chunks write no part
    parts = ShardedParquetDataset(path=str(tmp_path / "out")).load()
    assert isinstance(parts, ParquetParts) and len(parts.files) == 4 and len(parts) == 4300
    chunks = list(parts.iter_frames(["key_user", "price"], rows=500))
    assert max(len(c) for c in chunks) == 500 and list(chunks[0].columns) == ["key_user", "price"]
    np.testing.assert_array_equal(pd.concat(chunks)["key_user"], frame["key_user"])
    pd.testing.assert_frame_equal(parts.head(1234), frame.head(1234), check_dtype=False)
    pd.testing.assert_frame_equal(parts.read(["price"]), frame[["price"]])
    with pytest.raises(KeyError, match="no column\\(s\\) \\['nope'\\]"):
        next(parts.iter_frames(["nope"]))


def test_split_parts_are_written_through_one_dataset(tmp_path) -> None:
    """One output per chunk ({split: frame}); each split read back as its own parts."""
    frame = make_frame(900, 0)
    for _ in range(2):  # a second run replaces the first run's parts
        writer = ShardedSplitsDataset(path=str(tmp_path))
        for rows in np.array_split(np.arange(900), 3):
            chunk = frame.iloc[rows]
            writer.save({"train": chunk.iloc[:200], "valid": chunk.iloc[200:250],
                         "test": chunk.iloc[250:]})
        writer.save({"train": frame.iloc[:0]})  # an empty split writes nothing
    splits = writer.load()
    assert {s: len(p.files) for s, p in splits.items()} == {"train": 3, "valid": 3, "test": 3}
    assert (len(splits["train"]), len(splits["valid"]), len(splits["test"])) == (600, 150, 150)
    reader = ShardedParquetDataset(path=str(tmp_path / "model_input_valid")).load()
    assert reader.files == splits["valid"].files
    with pytest.raises(DatasetError, match="splits among \\['train', 'valid', 'test'\\].*"
                                            "keys \\['holdout'\\]"):
        writer.save({"holdout": frame})
    with pytest.raises(DatasetError, match="got DataFrame"):
        writer.save(frame)
