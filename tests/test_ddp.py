"""Distributed training on CPU: 2 processes on the gloo backend."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from cli_factory import cli_env
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from mlflow.tracking import MlflowClient

from processed_factory import write_processed
from vqi.engine import distributed
from vqi.engine.confusion import ConfusionMatrix
from vqi.models import load_checkpoint


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _reduce_worker(rank: int, world: int, port: int, targets, preds, out_dir: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    info = distributed.setup("cpu")
    try:
        cm = ConfusionMatrix()
        for i in distributed.ShardSampler(len(targets), info.rank, info.world_size):
            cm.update(targets[i], preds[i])
        distributed.all_reduce_sum(cm.mat)
        torch.save(cm.mat, Path(out_dir) / f"rank{rank}.pt")
    finally:
        distributed.cleanup()


def test_shards_cover_every_sample_once():
    shards = [list(distributed.ShardSampler(7, r, 3)) for r in range(3)]
    assert sorted(i for s in shards for i in s) == list(range(7))


def test_confusion_matrix_reduced_over_two_gloo_processes_equals_one_process(tmp_path):
    g = torch.Generator().manual_seed(0)
    targets = [torch.randint(0, 5, (6, 6), generator=g) for _ in range(5)]  # odd count: uneven shards
    preds = [torch.randint(0, 5, (6, 6), generator=g) for _ in range(5)]
    mp.spawn(_reduce_worker, args=(2, free_port(), targets, preds, str(tmp_path)), nprocs=2, join=True)
    whole = ConfusionMatrix()
    for t, p in zip(targets, preds):
        whole.update(t, p)
    for rank in range(2):
        assert torch.equal(torch.load(tmp_path / f"rank{rank}.pt"), whole.mat)


@pytest.mark.slow
def test_torchrun_two_cpu_processes_train_and_the_checkpoint_tests(tmp_path, tmp_paths, run_cli):
    processed = write_processed(tmp_path / "processed", {"train": 8, "val": 4, "test": 4}, size=64)
    small = ["model=deeplabv3_mobilenet_v3_large", "data.image_size=64", "train.batch_size=2",
             "train.num_workers=0", "train.progress=false", f"data.processed_dir={processed}",
             "train.epochs=2", "device=cpu"]
    env = cli_env(HYDRA_FULL_ERROR="1")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
         "-m", "vqi.run", "stage=train", *small, *tmp_paths],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-6000:]
    ckpt = load_checkpoint(tmp_path / "outputs" / "checkpoints" / "demo" / "baseline" / "last.pt")
    assert ckpt["epoch"] == 2
    client = MlflowClient(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [r.info.run_id for r in runs] == [ckpt["mlflow_run_id"]]  # rank 0 alone tracked
    assert [m.step for m in client.get_metric_history(ckpt["mlflow_run_id"], "train_loss")] == [1, 2]

    out = run_cli("stage=test", *small)
    assert "iou_overall" in out.stdout + out.stderr
    metrics = (tmp_path / "outputs" / "test" / "demo" / "baseline" / "test" / "metrics.json").read_text()
    assert np.isfinite(json.loads(metrics)["metrics"]["iou_background"])
