import atexit
import os
import shutil
import tempfile

import pytest

# Unit tests never talk to W&B and never write into the committed results/ or runs/, nor into the user's
# cache of parsed data sets.
os.environ["WANDB_MODE"] = "disabled"
os.environ["REPRO_CACHE"] = tempfile.mkdtemp(prefix="repro-test-cache-")
atexit.register(shutil.rmtree, os.environ["REPRO_CACHE"], ignore_errors=True)


@pytest.fixture
def isolated_outputs(tmp_path, monkeypatch):
    """Results and runs of a test go to its own temporary folders."""
    import repro.results
    import repro.train

    monkeypatch.setattr(repro.results, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(repro.train, "RUNS", tmp_path / "runs")
    monkeypatch.setenv("REPRO_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("REPRO_RUNS", str(tmp_path / "runs"))
    return tmp_path


@pytest.fixture
def harness_state(monkeypatch):
    """run_seed seeds everything and turns on deterministic algorithms; undo that for other tests."""
    import torch

    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    deterministic = torch.are_deterministic_algorithms_enabled()
    yield
    torch.use_deterministic_algorithms(deterministic)


@pytest.fixture
def one_thread():
    """Small tensors: one thread is faster on the 2-core box, and keeps runs reproducible."""
    from tests.runs import one_cpu_thread

    with one_cpu_thread():
        yield
