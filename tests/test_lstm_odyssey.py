"""Tests for papers/lstm_odyssey (data, metric, model, harness runs) against specs/lstm_odyssey.md.

The LSTM layer and its variants have their own tests (tests/test_lstm.py). Tests that read the shipped pickle
skip only when the data root has no ``jsb_chorales`` folder.
"""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch

from papers.lstm_odyssey import data as jsb
from papers.lstm_odyssey.data import JSBData, collate, load_chorales, piano_roll
from papers.lstm_odyssey.model import VARIANT_NAMES, OdysseyModule
from repro.data import DataError, data_root
from tests import runs

needs_data = pytest.mark.skipif(
    not jsb.pickle_path().exists(),
    reason=f"no JSB Chorales under {data_root()}; set REPRO_DATA=../shared/data",
)


# --------------------------------------------------------------------------------------------------
# Data (spec §2)


@needs_data
def test_split_sizes_frame_counts_and_empty_frames_are_the_specs():
    parts = load_chorales()
    assert {k: len(v) for k, v in parts.items()} == {"train": 229, "valid": 76, "test": 77}
    assert {k: sum(len(r) for r in v) for k, v in parts.items()} == {
        "train": 13807,
        "valid": 4602,
        "test": 4725,
    }
    assert sum(int((r.sum(1) == 0).sum()) for v in parts.values() for r in v) == 64
    lengths = [len(r) for r in parts["train"]]
    assert (min(lengths), max(lengths)) == (25, 129)
    keys = np.flatnonzero(np.concatenate([r for v in parts.values() for r in v]).any(0))
    assert (keys.min() + 21, keys.max() + 21) == (43, 96)  # MIDI pitches 43-96
    assert all(r.sum(1).max() <= 4 for v in parts.values() for r in v)


@needs_data
def test_test_set_has_4648_predicted_frames():
    data = JSBData()
    data.setup()
    assert sum(float(b["mask"].sum()) for b in data.evaluation_batches("test")) == 4648


def test_piano_roll_indexes_midi_minus_21_and_rejects_pitches_off_the_keyboard():
    roll = piano_roll([(21, 60), (), (108,)])
    assert roll.shape == (3, 88)
    assert np.flatnonzero(roll[0]).tolist() == [0, 39] and not roll[1].any() and roll[2, 87] == 1
    with pytest.raises(ValueError, match="MIDI pitch 109"):
        piano_roll([(109,)])


def test_collate_shifts_targets_by_one_frame_and_masks_padding():
    a = np.eye(88, dtype=np.uint8)[:3]  # 3 frames: 2 predicted
    b = np.eye(88, dtype=np.uint8)[10:15]  # 5 frames: 4 predicted
    batch = collate([a, b])
    assert batch["inputs"].shape == (4, 2, 88)
    assert batch["mask"][:, 0].tolist() == [1, 1, 0, 0] and batch["mask"][:, 1].tolist() == [1, 1, 1, 1]
    assert torch.equal(batch["targets"][:2, 0], torch.from_numpy(a[1:]).float())
    assert torch.equal(batch["inputs"][:, 1], torch.from_numpy(b[:-1]).float())
    assert not batch["inputs"][2:, 0].any()


def fake_root(tmp_path, monkeypatch, payload: bytes):
    folder = tmp_path / "jsb_chorales"
    folder.mkdir(parents=True)
    (folder / jsb.FILE).write_bytes(payload)
    monkeypatch.setenv("REPRO_DATA", str(tmp_path))
    return folder / jsb.FILE


def test_wrong_checksum_names_the_file_and_the_expected_sha(tmp_path, monkeypatch):
    path = fake_root(tmp_path, monkeypatch, b"not the chorales")
    with pytest.raises(DataError, match=f"checksum mismatch for {path}: expected sha256 {jsb.SHA256}"):
        load_chorales()


def test_a_pickle_that_is_not_the_chorales_is_named(tmp_path, monkeypatch):
    payload = pickle.dumps({"train": []})
    path = fake_root(tmp_path, monkeypatch, payload)
    import hashlib

    monkeypatch.setattr(jsb, "SHA256", hashlib.sha256(payload).hexdigest())
    with pytest.raises(DataError, match=f"{path} is not the JSB Chorales pickle"):
        load_chorales()


def test_missing_file_without_internet_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_DATA", str(tmp_path))
    monkeypatch.setattr(jsb, "URL", "http://127.0.0.1:9/JSB%20Chorales.pickle")  # nothing listens there
    with pytest.raises(DataError, match="copy the file there by hand or set REPRO_DATA"):
        load_chorales()


@needs_data
def test_training_order_is_seeded_per_epoch_and_noise_touches_training_inputs_only():
    data = JSBData(batch_size=8, input_noise=0.5, seed=3)
    data.setup()
    first, again, second = data.training_batches(0), data.training_batches(0), data.training_batches(1)
    assert len(first) == math.ceil(229 / 8)
    assert all(torch.equal(a["inputs"], b["inputs"]) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0]["targets"], second[0]["targets"])
    assert sum(float(b["mask"].sum()) for b in first) == 13807 - 229
    noisy = first[0]["inputs"][first[0]["mask"].bool()]
    assert not set(noisy.unique().tolist()) <= {0.0, 1.0}
    assert set(data.evaluation_batches("valid")[0]["inputs"].unique().tolist()) <= {0.0, 1.0}
    assert set(first[0]["targets"].unique().tolist()) <= {0.0, 1.0}


# --------------------------------------------------------------------------------------------------
# Metric and model (spec §3, §6)


def test_frame_nll_is_binary_cross_entropy_summed_over_keys_per_predicted_frame():
    """Golden value: all logits 0 give p = 0.5 on every key, so every predicted frame costs 88 ln 2."""
    module = OdysseyModule(hidden_size=4)
    with torch.no_grad():
        module.readout.weight.zero_()
        module.readout.bias.zero_()
    batch = collate([np.eye(88, dtype=np.uint8)[:3], np.eye(88, dtype=np.uint8)[:6]])
    nll, frames = module.frame_nll(batch)
    assert float(frames) == 2 + 5
    assert float(nll) == pytest.approx(7 * 88 * math.log(2), rel=1e-6)
    with torch.no_grad():
        module.readout.bias.fill_(2.0)  # p = σ(2) on every key
    nll, _ = module.frame_nll(batch)
    p = 1 / (1 + math.exp(-2.0))
    per_frame = -(math.log(p) + 87 * math.log(1 - p))  # one note on, 87 off in each target frame
    assert float(nll) == pytest.approx(7 * per_frame, rel=1e-6)


def test_every_variant_builds_and_unknown_names_are_listed():
    for name in VARIANT_NAMES:
        assert OdysseyModule(variant=name, hidden_size=4).lstm.config is not None
    with pytest.raises(ValueError, match="model.variant must be one of vanilla, NIG, NFG"):
        OdysseyModule(variant="dglstm")


@needs_data
def test_overfits_one_batch():
    torch.manual_seed(0)
    data = JSBData(batch_size=2)
    data.setup()
    batch = data.training_batches(0)[0]
    module = OdysseyModule(hidden_size=32, lr=0.5, momentum=0.9)
    optimizer = module.configure_optimizers()
    start = None
    for _ in range(150):
        nll, frames = module.frame_nll(batch)
        loss = nll / frames
        start = start or float(loss)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert float(loss) < 0.15 * start


# --------------------------------------------------------------------------------------------------
# Harness: smoke run, resume, DDP


def run(root, overrides=(), resume=False, experiment="vanilla"):
    return runs.smoke("lstm_odyssey", experiment, root, overrides, resume)


@needs_data
@pytest.mark.slow
def test_smoke_run_writes_a_full_record_with_checkpoints_and_logs(tmp_path, harness_state):
    record = run(tmp_path, experiment="fgr")
    metrics = record["metrics"]
    assert 0 < metrics["test_nll"] < 88 * math.log(2) + 1
    assert metrics["val_nll"] == min(h["val/nll"] for h in record["details"]["val_curve"])
    assert record["data"][0]["sha256"] == jsb.SHA256
    work = tmp_path / "lstm_odyssey" / "fgr" / "smoke" / "seed1"
    assert sorted(p.name for p in (work / "checkpoints").glob("*.ckpt")) == ["epoch000.ckpt", "epoch001.ckpt"]
    assert "val/nll" in (work / "csv" / "metrics.csv").read_text().splitlines()[0]


@needs_data
@pytest.mark.slow
def test_early_stopping_ends_training_and_the_test_uses_the_best_epoch(tmp_path, harness_state):
    """lr 0 never improves on epoch 0: with patience 2, training stops after epoch 2 and tests epoch 0."""
    record = run(tmp_path, ["model.lr=0.0", "model.patience=2", "trainer.max_epochs=10"])
    assert record["epochs_trained"] == 3
    assert record["metrics"]["best_epoch"] == 0


@needs_data
@pytest.mark.slow
def test_resume_equals_uninterrupted(tmp_path, harness_state):
    resumed, straight = runs.resumed_and_straight("lstm_odyssey", "vanilla", tmp_path)
    assert resumed["metrics"] == straight["metrics"]
    assert resumed["details"] == straight["details"]


@needs_data
@pytest.mark.slow
def test_ddp_two_cpu_processes_train_the_single_process_model(tmp_path, harness_state):
    """Each rank takes half of every batch's chorales and the loss is scaled by the global frame count, so
    DDP's averaged gradient is the single-process one."""
    single = run(tmp_path / "one")
    record = runs.ddp_smoke("lstm_odyssey", "vanilla", tmp_path / "two")
    assert record["metrics"]["test_nll"] == pytest.approx(single["metrics"]["test_nll"], rel=1e-4)


# --------------------------------------------------------------------------------------------------
# The comparison: Welch's t-test and the table (figures.py)


@pytest.mark.parametrize("t", [0.3, 1.0, 2.5, 10.0])
def test_welch_p_values_match_the_t_distributions_closed_forms(t):
    """Two-sided p of Student's t: 1 - (2/π) atan|t| for 1 degree of freedom, 1 - |t|/√(2 + t²) for 2."""
    from papers.lstm_odyssey.figures import incomplete_beta

    assert incomplete_beta(1 / (1 + t * t), 0.5, 0.5) == pytest.approx(
        1 - 2 / math.pi * math.atan(t), abs=1e-12
    )
    assert incomplete_beta(2 / (2 + t * t), 1.0, 0.5) == pytest.approx(
        1 - t / math.sqrt(2 + t * t), abs=1e-12
    )


def test_welch_statistic_degrees_of_freedom_and_p_on_a_hand_worked_pair():
    """a = (1, 2, 3), b = (2, 3, 4): t = -1/√(2/3), ν = 4, and p from the closed form of the 4-ν CDF."""
    from papers.lstm_odyssey.figures import welch

    t, df, p = welch([1.0, 2.0, 3.0], [2.0, 3.0, 4.0])
    assert t == pytest.approx(-1 / math.sqrt(2 / 3)) and df == pytest.approx(4.0)
    x = t * t
    cdf = 0.5 + 0.375 * (abs(t) / math.sqrt(1 + x / 4)) * (1 - x / (12 * (1 + x / 4)))
    assert p == pytest.approx(2 * (1 - cdf), abs=1e-12)


def test_comparison_table_and_figure_from_records(tmp_path):
    from papers.lstm_odyssey import figures
    from repro import results

    runs = {
        "vanilla": [8.0, 8.1, 8.2],
        "NFG": [9.0, 9.1, 9.2],
        "CIFG": [8.05, 8.15, 8.1],
        "NOAF": [7.0, 7.1, 7.05],
    }
    for name, values in runs.items():
        for seed, value in enumerate(values, start=1):
            record = {"seed": seed, "metrics": {"test_nll": value}}
            results.write_json(
                results.record_path("lstm_odyssey", name.lower(), "cpu", seed, tmp_path), record
            )
    paths = figures.make_figures(tmp_path / "lstm_odyssey", "cpu")
    assert [p.name for p in paths] == ["figure3_cpu.png", "comparison_cpu.md"]
    table = paths[1].read_text()
    assert "| NFG | 3 | 9.100 ± 0.100 | 9.100 |" in table
    assert "| significantly worse | worse beyond the seed spread | significantly worse |" in table
    cifg = next(line for line in table.splitlines() if line.startswith("| CIFG |"))
    assert cifg.endswith("| no significant difference | within the seed spread | not significantly better |")
    assert "- no variant better than vanilla: does not hold: NOAF; does not hold: NOAF" in table
    assert "- NFG worse than vanilla: holds; holds" in table
    assert "- NOAF worse than vanilla: significantly better; better beyond the seed spread" in table
    assert paths[0].stat().st_size > 10_000
