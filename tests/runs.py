"""Real (smoke-tier) runs through the harness, shared by the papers' tests."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import torch

from repro.train import RunSpec, run_seed

REPO = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def one_cpu_thread() -> Iterator[None]:
    """Torch on one CPU thread inside the block, its thread count restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def smoke(paper: str, experiment: str, root: Path, overrides=(), resume: bool = False) -> dict:
    """One seed of ``experiment`` at the smoke tier, with its records and runs under ``root``, on one CPU
    thread: multi-threaded CPU kernels (nn.LSTM's among them) do not sum in the same order run to run, and
    the resume tests compare runs bit for bit. Smoke tensors are small enough that one thread costs little."""
    spec = RunSpec(
        paper,
        experiment,
        "smoke",
        seed=1,
        overrides=list(overrides),
        resume=resume,
        progress=False,
        results_root=root,
        runs_root=root,
    )
    with one_cpu_thread():
        return run_seed(spec)


def resumed_and_straight(paper: str, experiment: str, root: Path, overrides=()) -> tuple[dict, dict]:
    """The records of a 3-epoch smoke run stopped after its second epoch and resumed (under root/b), and of
    one uninterrupted 3-epoch run (under root/a); the resumed one must start from ``epoch001.ckpt``."""
    straight = smoke(paper, experiment, root / "a", ["trainer.max_epochs=3", *overrides])
    smoke(paper, experiment, root / "b", ["trainer.max_epochs=2", *overrides])
    resumed = smoke(paper, experiment, root / "b", ["trainer.max_epochs=3", *overrides], resume=True)
    assert resumed["resumed_from"] == "checkpoints/epoch001.ckpt"
    return resumed, straight


def module_smoke(paper: str, experiment: str, root: Path) -> dict:
    """``smoke`` for a module-scoped fixture: it cannot use the ``harness_state`` fixture, so it undoes what
    run_seed changes globally (deterministic algorithms, PL_GLOBAL_SEED) itself."""
    os.environ["WANDB_MODE"] = "disabled"
    deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        return smoke(paper, experiment, root)
    finally:
        torch.use_deterministic_algorithms(deterministic)
        os.environ.pop("PL_GLOBAL_SEED", None)


def ddp_smoke(paper: str, experiment: str, root: Path, overrides=()) -> dict:
    """The same smoke run as 2 CPU processes under Lightning DDP (``python -m repro.train``, as the CLI starts
    a run), with its one record read back."""
    env = {
        **os.environ,
        "REPRO_RESULTS": str(root / "results"),
        "REPRO_RUNS": str(root / "runs"),
        "WANDB_MODE": "disabled",
        "OMP_NUM_THREADS": "1",
    }
    cmd = [sys.executable, "-m", "repro.train", paper, experiment, "smoke", "1", "--no-progress"]
    for item in [*overrides, "trainer.devices=2", "trainer.strategy=ddp", "trainer.accelerator=cpu"]:
        cmd += ["--set", item]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = list((root / "results").rglob("*.json"))
    assert len(records) == 1, records
    record = json.loads(records[0].read_text())
    assert record["hardware"]["devices"] == 2
    return record
