import os

import pytest

# Unit tests never talk to W&B and never write into the committed results/ or runs/.
os.environ["WANDB_MODE"] = "disabled"


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
