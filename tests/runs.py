"""Real (smoke-tier) runs through the harness, shared by the papers' tests."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from repro.train import RunSpec, run_seed


def smoke(paper: str, experiment: str, root: Path, overrides=(), resume: bool = False) -> dict:
    """One seed of ``experiment`` at the smoke tier, with its records and runs under ``root``."""
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
    return run_seed(spec)


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
