"""Tests for papers/dkt (data, model, harness runs) against /work/shared/specs/dkt.md.

The baselines (papers/dkt/baselines.py) and the generator (papers/dkt/simulate.py) have their own test files.
Tests that read the shipped files skip only when the data root has no ``dkt_assistments`` folder.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torchmetrics.functional.classification import binary_auroc

from papers.dkt import data as dkt_data
from papers.dkt.baselines import Marginal
from papers.dkt.data import (
    DataFormatError,
    DKTData,
    cached_students,
    collate,
    length_groups,
    read_assistments,
    scoreable,
)
from papers.dkt.model import DKT, DKTModule, row_chunks, scores
from repro.data import DataError, data_root
from tests import runs

REPO = Path(__file__).resolve().parent.parent
DATA = data_root() / "dkt_assistments"
needs_data = pytest.mark.skipif(
    not (DATA / "assistments").exists(), reason=f"no DKT data under {DATA}; set REPRO_DATA=../shared/data"
)


pytestmark = pytest.mark.usefixtures("one_thread")


def student(q, a):
    return np.array(q, dtype=np.int64), np.array(a, dtype=np.int64)


def batch_of(students):
    return collate(students, list(range(len(students))), world=1, rank=0)


# -----------------------------------------------------------------------------
# Data: the shipped files (spec §2.1, §2.2)


@needs_data
def test_assistments_files_have_the_spec_statistics():
    train = read_assistments(DATA / "assistments" / "builder_train.csv")
    test = read_assistments(DATA / "assistments" / "builder_test.csv")
    assert (len(train), len(test)) == (3361, 856)
    assert sum(len(q) for q, _ in train) == 407_967 and sum(len(q) for q, _ in test) == 117_567
    assert sum(len(q) - 1 for q, _ in scoreable(test, "test")) == 116_711  # the scored predictions
    assert max(len(q) for q, _ in train) == 4290 and max(len(q) for q, _ in test) == 8214
    skills = np.unique(np.concatenate([q for q, _ in train + test]))
    assert skills.min() == 0 and skills.max() == 123 and len(skills) == 124


BLOCK = "3\n1,2,3,\n1,0,1,\n"


@pytest.mark.parametrize(
    "text, line, problem",
    [
        ("x\n1,\n1,\n", 1, "expected the number of answers"),
        ("3\n1,2,\n1,0,1,\n", 1, "says 3 answers but has 2 skill ids"),
        ("2\n1,124,\n1,0,\n", 2, "skill id 124 out of range 0..123"),
        ("2\n1,-1,\n1,0,\n", 2, "skill id -1 out of range"),
        ("2\n1,2,\n1,2,\n", 3, "correctness 2 is not 0 or 1"),
        ("0\n\n\n", 1, "empty sequence"),
        ("2\n1,a,\n1,0,\n", 2, "skill ids must be comma-separated integers"),
        ("3\n1,2,3,\n", 2, "ends inside a student block"),
    ],
)
def test_malformed_assistments_file_names_file_line_and_problem(tmp_path, text, line, problem):
    path = tmp_path / "bad.csv"
    path.write_text(BLOCK + text)
    with pytest.raises(DataFormatError) as err:
        read_assistments(path)
    # The bad block starts after the good one's three lines.
    assert f"{path}:{3 + line}:" in str(err.value) and problem in str(err.value)


def test_single_answer_students_are_dropped_with_a_count(caplog):
    students = [student([1, 2], [1, 0]), student([3], [1]), student([4, 5, 6], [0, 0, 1])]
    with caplog.at_level(logging.INFO, logger="papers.dkt.data"):
        kept = scoreable(students, "train")
    assert len(kept) == 2 and all(len(q) >= 2 for q, _ in kept)
    assert "dropped 1 of 3 students with a single answer" in caplog.text


@needs_data
def test_corrupt_file_fails_its_checksum_and_names_it(tmp_path):
    copy = tmp_path / "dkt_assistments" / "assistments"
    copy.mkdir(parents=True)
    (copy / "builder_train.csv").write_bytes((DATA / "assistments" / "builder_train.csv").read_bytes()[:-10])
    with pytest.raises(DataError, match="checksum mismatch") as err:
        dkt_data.data_file("assistments/builder_train.csv", root=tmp_path)
    assert str(copy / "builder_train.csv") in str(err.value)


@needs_data
def test_absent_file_is_downloaded_from_the_official_address_and_verified(tmp_path, monkeypatch):
    """Offline, the official URL is replaced by a file:// copy: the same download-then-verify path."""
    mirror = tmp_path / "mirror" / "assistments"
    mirror.mkdir(parents=True)
    shutil.copy(DATA / "assistments" / "builder_test.csv", mirror)
    monkeypatch.setattr(dkt_data, "OFFICIAL", (tmp_path / "mirror").as_uri() + "/")
    path = dkt_data.data_file("assistments/builder_test.csv", root=tmp_path / "root")
    assert path == tmp_path / "root" / "dkt_assistments" / "assistments" / "builder_test.csv"
    assert path.read_bytes() == (DATA / "assistments" / "builder_test.csv").read_bytes()


def test_parsed_file_is_cached_as_an_arrow_dataset_keyed_by_checksum(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "small.csv"
    path.write_text(BLOCK + "2\n5,6,\n0,1,\n")
    calls = []

    def parse(p):
        calls.append(p)
        return read_assistments(p)

    first = cached_students(path, "ab" * 32, parse)
    second = cached_students(path, "ab" * 32, parse)
    assert len(calls) == 1 and (tmp_path / "cache" / "datasets" / f"small-{'ab' * 8}").is_dir()
    for (q1, a1), (q2, a2) in zip(first, second, strict=True):
        assert q1.dtype == np.int64 and np.array_equal(q1, q2) and np.array_equal(a1, a2)
    assert [q.tolist() for q, _ in second] == [[1, 2, 3], [5, 6]]


@needs_data
def test_synthetic_split_is_disjoint_and_seed_k_reads_version_k_minus_1():
    data = DKTData(source="synthetic", concepts=5, seed=3)
    data.setup()
    assert data.files[0].name == "naive_c5_q50_s4000_v2.csv"
    answers = dkt_data.read_synthetic(data.files[0])
    assert len(data.train) + len(data.val) == 2000 and len(data.val) == 200
    assert [a.tolist() for _, a in data.test] == answers[2000:].tolist()  # rows 2000..3999 only
    train_rows = {tuple(a.tolist()) for _, a in data.train + data.val}
    assert train_rows <= {tuple(r) for r in answers[:2000].tolist()}
    assert all(q.tolist() == list(range(50)) for q, _ in data.test[:5])
    assert data.concept_of.shape == (50,) and set(data.concept_of.tolist()) == set(range(5))


def test_unshipped_synthetic_setting_explains_the_generated_source():
    with pytest.raises(ValueError, match="data.source=generated"):
        DKTData(source="synthetic", concepts=3).shipped_files()


# -----------------------------------------------------------------------------
# Batches: length buckets, the DDP deal, resumable order


def many_students(n=250, seed=0):
    rng = np.random.default_rng(seed)
    return [student(rng.integers(0, 10, k), rng.integers(0, 2, k)) for k in rng.integers(2, 60, n).tolist()]


def test_length_groups_are_sorted_buckets_of_batch_size():
    students = many_students()
    groups = length_groups(students, 100)
    assert [len(g) for g in groups] == [100, 100, 50]
    lengths = [len(students[i][0]) for g in groups for i in g]
    assert lengths == sorted(lengths) and sorted(i for g in groups for i in g) == list(range(250))


def fake_trainer(world, rank, epoch=0):
    progress = SimpleNamespace(current=SimpleNamespace(processed=epoch))
    return SimpleNamespace(
        world_size=world, global_rank=rank, fit_loop=SimpleNamespace(epoch_progress=progress)
    )


def test_ddp_deals_each_group_so_every_student_is_seen_once_and_ranks_step_together():
    data = DKTData(batch_size=100, seed=1)
    data.train = many_students(201)  # the last group has 1 student: fewer than 2 devices
    per_rank = []
    for rank in (0, 1):
        data.trainer = fake_trainer(2, rank)
        per_rank.append((data.batches(data.train, epoch=0), data.batches(data.train)))
    (train0, eval0), (train1, eval1) = per_rank
    assert len(train0) == len(train1) == 2  # the 1-student group sits out of training
    seen = sorted(i for batches in (eval0, eval1) for b in batches for i in b["index"].tolist())
    assert seen == list(range(201))  # evaluation keeps every student, each on one rank
    for b0, b1 in zip(train0, train1, strict=True):
        assert b0["scored_global"] == b1["scored_global"]
        assert b0["scored_global"] == (b0["lengths"] - 1).sum() + (b1["lengths"] - 1).sum()


def test_training_order_is_fresh_per_epoch_and_repeats_for_the_same_seed_and_epoch():
    data = DKTData(batch_size=10, seed=1)
    data.train = many_students(200)

    def order(epoch, seed=1):
        data.hparams.seed = seed
        return [b["index"].tolist() for b in data.batches(data.train, epoch=epoch)]

    assert order(3) == order(3)
    assert order(3) != order(4) and order(3) != order(3, seed=2)
    assert sorted(map(sorted, order(3))) == sorted(map(sorted, order(4)))  # same groups, new order


# -----------------------------------------------------------------------------
# Model (spec §3.1)


def test_onehot_input_index_is_q_plus_M_times_a():
    net = DKT(n_skills=7, encoding="onehot")
    assert torch.equal(net.codes, torch.eye(14))
    q, a = 3, 1
    assert net.codes[q + 7 * a].argmax() == 10


def test_compressed_input_is_a_fixed_seeded_gaussian_and_not_learned():
    one, two = DKT(n_skills=124, encoding="compressed"), DKT(n_skills=124, encoding="compressed")
    expected = torch.randn(248, 100, generator=torch.Generator().manual_seed(12345))
    assert torch.equal(one.codes, expected) and torch.equal(two.codes, expected)
    assert "codes" not in dict(one.named_parameters()) and one.rnn.input_size == 100


def test_rnn_cell_is_the_tanh_rnn_and_initial_state_is_learned():
    net = DKT(n_skills=5, cell="rnn", hidden_size=8)
    assert isinstance(net.rnn, torch.nn.RNN) and net.rnn.nonlinearity == "tanh"
    out = net(torch.tensor([[1, 2, 3]]))
    out.sum().backward()
    assert net.initial.grad is not None and net.initial.grad.abs().sum() > 0
    assert isinstance(DKT(n_skills=5).rnn, torch.nn.LSTM)


def small_module(**kwargs):
    torch.manual_seed(0)
    args = {"n_skills": 10, "hidden_size": 16, "baselines": False, "dropout": 0.0, **kwargs}
    return DKTModule(**args)


def test_loss_scores_only_the_next_questions_output():
    """Only readout rows of exercises that appear as q_{t+1} get a gradient."""
    module = small_module()
    batch = batch_of([student([0, 1, 2, 1], [1, 0, 1, 1]), student([5, 3], [0, 1])])
    logit, target, _, _ = module.predict_next(batch)
    torch.nn.functional.binary_cross_entropy_with_logits(logit, target.float(), reduction="sum").backward()
    touched = module.net.readout.weight.grad.abs().sum(1).nonzero().flatten().tolist()
    assert touched == [1, 2, 3]  # next questions 1, 2, 1 and 3; never 0 or 5 (only inputs)
    assert target.tolist() == [0, 1, 1, 1]


def test_prediction_for_answer_t_plus_1_never_sees_it():
    module = small_module().eval()
    base = student([0, 1, 2, 3, 4], [1, 0, 1, 0, 1])
    flipped = student([0, 1, 2, 3, 4], [1, 0, 0, 0, 1])  # a_2 changed
    p0, _, _, _ = module.predict_next(batch_of([base]))
    p1, _, _, _ = module.predict_next(batch_of([flipped]))
    # p[t] predicts answer t + 1: p[0], p[1] (answers 1, 2) cannot depend on a_2; p[2] must.
    assert torch.equal(p0[:2], p1[:2]) and not torch.equal(p0[2], p1[2])


def test_padding_never_changes_predictions_or_targets():
    module = small_module().eval()
    short, long = student([1, 2, 3], [1, 1, 0]), student(list(range(9)), [0, 1] * 4 + [1])
    alone, _, _, _ = module.predict_next(batch_of([short]))
    padded, target, rows, times = module.predict_next(batch_of([short, long]))
    assert torch.allclose(padded[rows == 0], alone, atol=1e-6)
    assert len(target) == 2 + 8 and times[rows == 0].tolist() == [0, 1]


def test_dropout_acts_on_the_readout_only():
    net = DKT(n_skills=6, hidden_size=32, dropout=0.5).train()
    seen = []
    net.rnn.register_forward_hook(lambda mod, inp, out: seen.append(out[0].detach()))
    x = torch.tensor([[1, 7, 3, 2]])
    first, second = net(x), net(x)
    assert torch.equal(seen[0], seen[1])  # the recurrence is deterministic in training mode
    assert not torch.equal(first, second)  # the readout input is dropped out
    assert net.rnn.dropout == 0 and net.dropout == 0.5


def test_chunked_forward_equals_one_pass():
    module = small_module().eval()
    batch = batch_of(many_students(30, seed=2))
    order = torch.argsort(batch["lengths"])
    batch = {k: v[order] if v.dim() else v for k, v in batch.items()}
    assert len(row_chunks(batch["lengths"], 100)) > 3
    module.hparams.max_steps = 100
    chunked = module.predict_next(batch)
    module.hparams.max_steps = 10**9
    whole = module.predict_next(batch)
    key = lambda out: out[2] * 1000 + out[3]  # noqa: E731 - (row, t) identifies a prediction
    a, b = torch.argsort(key(chunked)), torch.argsort(key(whole))
    assert torch.allclose(chunked[0][a], whole[0][b], atol=1e-6)
    assert torch.equal(chunked[1][a], whole[1][b])


def test_overfits_one_batch():
    module = small_module(hidden_size=64, optimizer="adam", lr=0.01)
    rng = np.random.default_rng(0)
    batch = batch_of([student(rng.integers(0, 10, 20), rng.integers(0, 2, 20)) for _ in range(8)])
    optimizer = module.configure_optimizers()
    for _ in range(300):
        logit, target, _, _ = module.predict_next(batch)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logit, target.float())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05


def test_wrong_n_skills_for_the_data_is_explained():
    module = small_module()
    module.trainer = SimpleNamespace(datamodule=SimpleNamespace(n_skills=124))
    with pytest.raises(ValueError, match="model.n_skills=124"):
        DKTModule.setup(module, "fit")


# -----------------------------------------------------------------------------
# Metrics (spec §6): exact pooled AUC, accuracy, RMSE


def test_auc_accuracy_rmse_golden_values():
    metric = scores()
    # Positives 0.35, 0.8 against negatives 0.1, 0.4: pairs ranked right 3 of 4.
    metric.update(torch.tensor([0.1, 0.4]), torch.tensor([0, 0]))  # two updates: pooled, not averaged
    metric.update(torch.tensor([0.35, 0.8]), torch.tensor([1, 1]))
    values = metric.compute()
    assert values["auc"] == pytest.approx(0.75)
    assert values["accuracy"] == pytest.approx(0.75)  # 0.1, 0.8 right; 0.4 right (<0.5); 0.35 wrong
    rmse = np.sqrt((0.1**2 + 0.4**2 + 0.65**2 + 0.2**2) / 4)
    assert values["rmse"] == pytest.approx(rmse)
    tied = scores()
    # Positives 0.5, 0.9; negatives 0.5, 0.2: the tie counts half, (0.5 + 1 + 1 + 1) / 4.
    tied.update(torch.tensor([0.5, 0.5, 0.2, 0.9]), torch.tensor([1, 0, 0, 1]))
    assert tied.compute()["auc"] == pytest.approx(0.875)


# -----------------------------------------------------------------------------
# Harness: smoke run, resume, DDP


def run(root, overrides=(), resume=False, experiment="assistments_lstm"):
    return runs.smoke("dkt", experiment, root, overrides, resume)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    if not (DATA / "assistments").exists():
        pytest.skip(f"no DKT data under {DATA}")
    root = tmp_path_factory.mktemp("dkt_smoke")
    record = runs.module_smoke("dkt", "assistments_lstm", root)
    return record, root


@pytest.mark.slow
def test_smoke_run_writes_a_full_record_with_checkpoints_and_logs(smoke_run):
    record, root = smoke_run
    metrics = record["metrics"]
    for key in ("auc", "accuracy", "rmse", "auc_marginal", "auc_bkt", "val_auc"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert "auc_oracle" not in metrics  # the shipped data has no true probabilities
    pinned = dkt_data.pinned_sha256()
    assert {Path(d["path"]).name: d["sha256"] for d in record["data"]} == {
        "builder_train.csv": pinned["assistments/builder_train.csv"],
        "builder_test.csv": pinned["assistments/builder_test.csv"],
    }
    work = root / "dkt" / "assistments_lstm" / "smoke" / "seed1"
    assert sorted(p.name for p in (work / "checkpoints").glob("*.ckpt")) == ["epoch000.ckpt", "epoch001.ckpt"]
    assert "val/auc" in (work / "csv" / "metrics.csv").read_text().splitlines()[0]
    example = record["details"]["example_student"]
    assert len(example["p"]) == len(example["skills"]) and len(example["p"][0]) == len(example["q"])


@pytest.mark.slow
def test_smoke_baseline_aucs_score_the_same_positions_as_dkt(smoke_run):
    """auc_marginal from the module's test loop equals the marginal AUC computed directly over positions
    1..n-1 of every test student."""
    record, _ = smoke_run
    data = DKTData(**record["config"]["data"]["init_args"])
    data.setup()
    marginal = Marginal().fit(data.train + data.val)
    p = np.concatenate([marginal.predict(q)[1:] for q, _ in data.test])
    y = np.concatenate([a[1:] for _, a in data.test])
    assert len(y) == sum(len(q) - 1 for q, _ in data.test)
    direct = float(binary_auroc(torch.tensor(p), torch.tensor(y), thresholds=None))
    assert record["metrics"]["auc_marginal"] == pytest.approx(direct, abs=1e-6)


@needs_data
@pytest.mark.slow
def test_resume_equals_uninterrupted(tmp_path, harness_state):
    resumed, straight = runs.resumed_and_straight("dkt", "assistments_lstm", tmp_path)
    ckpt = "dkt/assistments_lstm/smoke/seed1/checkpoints/epoch002.ckpt"
    a = torch.load(tmp_path / "a" / ckpt, weights_only=False)["state_dict"]
    b = torch.load(tmp_path / "b" / ckpt, weights_only=False)["state_dict"]
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert resumed["metrics"] == straight["metrics"]


@needs_data
@pytest.mark.slow
def test_ddp_two_cpu_processes_train_the_single_process_model(tmp_path, harness_state):
    """2 ranks deal each batch of students; the loss is scaled so that DDP's averaged gradient is the single
    process one. Without dropout (whose masks differ per rank) the test AUC matches one process."""
    overrides = ["model.dropout=0.0"]
    single = run(tmp_path / "one", overrides)
    record = runs.ddp_smoke("dkt", "assistments_lstm", tmp_path / "two", overrides)
    for key in ("auc", "auc_marginal", "auc_bkt"):
        assert record["metrics"][key] == pytest.approx(single["metrics"][key], abs=1e-4), key


# -----------------------------------------------------------------------------
# Figures and bench


def commit_records(folder: Path, metrics_by_seed: dict[int, dict], details: dict | None = None) -> None:
    from repro import results

    for seed, metrics in metrics_by_seed.items():
        record = {"seed": seed, "metrics": metrics, "details": details or {}}
        results.write_json(folder / f"seed{seed}.json", record)
    results.write_json(folder / "aggregate.json", {"records": [f"seed{s}.json" for s in metrics_by_seed]})


def test_figure3a_draws_mean_over_seeds_per_concept_count(tmp_path, monkeypatch):
    from papers.dkt import figures

    drawn = {}
    real_errorbar = figures.plt.Axes.errorbar

    def spy(ax, x, y, yerr, **kwargs):
        drawn[kwargs["label"]] = (list(x), [round(v, 6) for v in y], [round(v, 6) for v in yerr])
        return real_errorbar(ax, x, y, yerr, **kwargs)

    monkeypatch.setattr(figures.plt.Axes, "errorbar", spy)
    for c in (1, 3):
        commit_records(
            tmp_path / f"generated_c{c}_lstm" / "cpu",
            {
                1: {"auc": 0.8, "auc_bkt": 0.6, "auc_oracle": 0.9},
                2: {"auc": 0.7, "auc_bkt": 0.6, "auc_oracle": 0.9},
            },
        )
    commit_records(
        tmp_path / "generated_c3_rnn" / "cpu", {1: {"auc": 0.65, "auc_bkt": 0.5, "auc_oracle": 0.9}}
    )
    paths = figures.make_figures(tmp_path, "cpu")
    assert paths == [tmp_path / "figure3a_cpu.png"] and paths[0].stat().st_size > 0
    assert drawn["LSTM"] == ([1, 3], [0.75, 0.75], [0.05, 0.05])
    assert drawn["RNN"] == ([3], [0.65], [0.0])
    # BKT and the oracle pool every run of a concept count (LSTM and RNN seeds alike).
    assert drawn["BKT"][1] == [0.6, round((0.6 + 0.6 + 0.5) / 3, 6)]


@pytest.mark.slow
def test_figure1_draws_the_traced_student(smoke_run):
    from papers.dkt import figures
    from repro import results

    _, root = smoke_run
    folder = root / "dkt" / "assistments_lstm" / "smoke"
    # as `repro reproduce` writes it
    results.write_json(folder / "aggregate.json", {"records": ["seed1.json"]})
    paths = figures.make_figures(root / "dkt", "smoke")
    assert root / "dkt" / "figure1_smoke.png" in paths


@needs_data
@pytest.mark.slow
def test_bench_quick_reports_throughput_and_chunking_side_by_side(tmp_path):
    from papers.dkt import bench

    out = tmp_path / "bench" / "dkt.json"
    report = bench.main(out, quick=True)
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    runs = report["training"]
    assert set(runs) == {"max_steps=50000", "max_steps=1000000000"}
    assert all(r["answers_per_s"] > 0 and r["batches"] == 4 for r in runs.values())
    assert runs["max_steps=50000"]["answers"] == runs["max_steps=1000000000"]["answers"]
    assert report["chunking_speedup"] > 0


# --------------------------------------------------------------------------------------------------
# the paper's protocol: 5-fold cross-validation over both files, grouped by student


def test_the_five_folds_partition_the_students_and_never_split_one():
    students = [SimpleNamespace(name=f"student {i}") for i in range(23)]
    tested = []
    for fold in range(5):
        train, test = dkt_data.cross_validation_split(students, 5, fold, seed=0)
        assert not {id(s) for s in train} & {id(s) for s in test}
        assert len(train) + len(test) == len(students) and len(test) in (4, 5)
        tested += test
    assert sorted(s.name for s in tested) == sorted(s.name for s in students)  # each tested exactly once
    assert (
        dkt_data.cross_validation_split(students, 5, 0, seed=0)[1]
        != (dkt_data.cross_validation_split(students, 5, 0, seed=1)[1])
    )


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"source": "synthetic", "folds": 5}, "cross-validates ASSISTments"),
        ({"folds": 5, "seed": 6}, "fold=5"),
        ({"folds": 1}, "folds=1"),
    ],
)
def test_a_fold_outside_the_folds_is_a_clear_error(kwargs, problem):
    with pytest.raises(ValueError, match=problem):
        DKTData(**kwargs)


@needs_data
@pytest.mark.slow
def test_cross_validation_smoke_run_tests_its_seeds_fold(tmp_path, harness_state):
    record = runs.smoke("dkt", "assistments_lstm_cv5", tmp_path)
    assert record["config"]["data"]["init_args"]["folds"] == 5
    assert 0 < record["metrics"]["auc"] < 1 and 0 < record["metrics"]["auc_marginal"] < 1
    data = DKTData(max_students=120, folds=5, seed=record["seed"])
    data.setup()
    assert data.fold == record["seed"] - 1 == 0
    shipped = DKTData(max_students=120)
    shipped.setup()
    union = len(shipped.train) + len(shipped.val) + len(shipped.test)
    assert len(data.train) + len(data.val) + len(data.test) == union
    assert len(data.test) in (union // 5, union // 5 + 1)
