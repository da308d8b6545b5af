"""Tests for papers/depth_gated_lstm (PTB data, batching, perplexity, the depth gate in the model, harness
runs) against specs/depth_gated_lstm.md. The depth-gated layer itself is tested in tests/test_lstm.py. Tests
that read PTB skip only when the data root has no ``ptb`` folder."""

from __future__ import annotations

import hashlib
import io
import math
import tarfile
from dataclasses import replace

import numpy as np
import pytest
import torch

from papers.depth_gated_lstm import data as ptb
from papers.depth_gated_lstm.data import IGNORE, TOKENS, PTBData, Vocabulary, sentence_batch, streams
from papers.depth_gated_lstm.model import DepthGatedLM
from repro import config as config_lib
from repro import results
from repro.data import DataError, data_root
from repro.lstm import LSTMLayer, LSTMVariant, variant
from repro.papers import get_paper
from tests import runs

needs_data = pytest.mark.skipif(
    not ptb.ptb_path("train").exists(),
    reason=f"no PTB under {data_root()}; set REPRO_DATA=../shared/data",
)


@pytest.fixture(scope="module")
def corpus():
    """The three splits encoded with the training vocabulary (read once for the module)."""
    data = PTBData()
    data.setup()
    return data


# --------------------------------------------------------------------------------------------------
# Data (spec §2): files, counts, vocabulary


@needs_data
def test_token_counts_and_vocabulary_are_the_specs(corpus):
    assert {split: len(ids) for split, (ids, _) in corpus.parts.items()} == TOKENS
    assert TOKENS == {"train": 929_589, "valid": 73_760, "test": 82_430}
    lines = {split: len(starts) - 1 for split, (_, starts) in corpus.parts.items()}
    assert lines == {"train": 42_068, "valid": 3_370, "test": 3_761}
    words = {split: TOKENS[split] - lines[split] for split in lines}
    assert words == {"train": 887_521, "valid": 70_390, "test": 78_669}
    vocab = corpus.vocab
    assert len(vocab) == 10_000 and {"<unk>", "N", "<eos>"} <= set(vocab.words)
    assert vocab.words[:4] == ["the", "<unk>", "<eos>", "N"]  # by training frequency
    ids, starts = corpus.parts["valid"]
    assert (ids[starts[1:] - 1] == vocab.eos).all() and (ids == vocab.eos).sum() == 3_370  # one per line


def test_a_word_outside_the_training_vocabulary_is_refused():
    vocab = Vocabulary.of([["a", "b"], ["b"]])
    assert vocab.words == ["<eos>", "b", "a"]
    ids, starts = vocab.encode([["b", "a"], []])
    assert ids.tolist() == [1, 2, 0, 0] and starts.tolist() == [0, 3, 4]
    with pytest.raises(
        DataError, match=r"test.txt has 1 word types outside the training vocabulary \(e.g. \['c'\]\)"
    ):
        vocab.encode([["a", "c"]], "test.txt")


def fake_root(tmp_path, monkeypatch, contents: dict[str, bytes]):
    folder = tmp_path / "ptb"
    folder.mkdir(parents=True)
    for split, payload in contents.items():
        (folder / f"ptb.{split}.txt").write_bytes(payload)
    monkeypatch.setenv("REPRO_DATA", str(tmp_path))
    return folder


def test_wrong_checksum_names_the_file_and_the_expected_sha(tmp_path, monkeypatch):
    folder = fake_root(tmp_path, monkeypatch, {split: b" not ptb \n" for split in ptb.SPLITS})
    path = folder / "ptb.train.txt"
    with pytest.raises(
        DataError, match=f"checksum mismatch for {path}: expected sha256 {ptb.SHA256['train']}"
    ):
        PTBData().setup()


def archive(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()


def test_missing_files_are_taken_from_the_official_archive_and_checked(tmp_path, monkeypatch):
    """The archive's members ./simple-examples/data/ptb.*.txt, served from a local file:// URL; the train file
    is already there, so only valid and test are taken out. A member that does not match is not saved."""
    texts = {"train": b" a b \n b \n", "valid": b" b a \n", "test": b" a \n"}
    for split, text in texts.items():
        monkeypatch.setitem(ptb.SHA256, split, hashlib.sha256(text).hexdigest())
    folder = fake_root(tmp_path / "root", monkeypatch, {"train": texts["train"]})
    members = {f"./simple-examples/data/ptb.{s}.txt": t for s, t in texts.items()}
    members["./simple-examples/data/ptb.char.train.txt"] = b"other members stay in the archive"
    (tmp_path / "simple-examples.tgz").write_bytes(archive(members))
    monkeypatch.setattr(ptb, "ARCHIVE_URL", (tmp_path / "simple-examples.tgz").as_uri())
    paths = ptb.ptb_files()
    assert {s: p.read_bytes() for s, p in paths.items()} == texts
    assert sorted(p.name for p in folder.iterdir()) == ["ptb.test.txt", "ptb.train.txt", "ptb.valid.txt"]

    (folder / "ptb.test.txt").unlink()
    monkeypatch.setitem(ptb.SHA256, "test", "0" * 64)
    with pytest.raises(
        DataError, match=f"simple-examples/data/ptb.test.txt in {ptb.ARCHIVE_URL} does not match"
    ):
        ptb.ptb_files()
    assert not (folder / "ptb.test.txt").exists()


def test_an_unreachable_archive_says_which_files_to_copy_by_hand(tmp_path, monkeypatch):
    fake_root(tmp_path, monkeypatch, {})
    monkeypatch.setattr(ptb, "ARCHIVE_URL", "http://127.0.0.1:9/simple-examples.tgz")  # nothing listens
    with pytest.raises(DataError, match=r"cannot get ptb.train.txt, ptb.valid.txt, ptb.test.txt from "):
        ptb.ptb_files()
    with pytest.raises(DataError, match="copy them from the archive's simple-examples/data/ into"):
        ptb.ptb_files()


# --------------------------------------------------------------------------------------------------
# Batching (spec §6, §8): streams, windows, sentences; which tokens are predicted


def test_training_streams_are_contiguous_and_targets_are_inputs_shifted_by_one():
    ids = np.arange(100, 147)  # 47 tokens; <eos> is 0
    inputs, targets = streams(ids, 4, eos=0, pad=False)
    assert inputs.shape == targets.shape == (4, 11)  # 47 // 4; the last 3 tokens are left out
    assert targets.flatten().tolist() == list(range(100, 144))
    assert inputs[0, 0] == 0 and (inputs[:, 1:] == targets[:, :-1]).all()
    assert (inputs[1:, 0] == targets[:-1, -1]).all()  # each stream starts where the previous one ends
    batches = ptb.stream_windows(inputs, targets, 5, world=1, rank=0)
    assert [b["inputs"].shape for b in batches] == [(5, 4), (5, 4), (1, 4)]  # time-major; a short last window
    assert [b["first"] for b in batches] == [True, False, False]
    assert [b["tokens"] for b in batches] == [20, 20, 4]
    whole = torch.cat([b["targets"] for b in batches])
    assert torch.equal(whole.T, torch.from_numpy(targets))  # batch j + 1 continues every stream of batch j
    for a, b in zip(batches, batches[1:], strict=False):
        assert torch.equal(b["inputs"][0], a["targets"][-1])
    rank1 = ptb.stream_windows(inputs, targets, 5, world=2, rank=1)
    assert torch.equal(rank1[0]["inputs"], batches[0]["inputs"][:, 1::2]) and rank1[0]["tokens"] == 20


def test_evaluation_streams_pad_the_tail_so_every_token_is_predicted_once():
    ids = np.arange(1, 11)
    inputs, targets = streams(ids, 3, eos=0, pad=True)
    assert targets.tolist() == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, IGNORE, IGNORE]]
    assert inputs.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 0, 0]]


def test_a_sentence_is_eos_then_its_words_predicting_its_words_then_eos():
    batch = sentence_batch([np.array([5, 6, 2]), np.array([7, 2])], eos=2, tokens=5)
    assert batch["inputs"].T.tolist() == [[2, 5, 6], [2, 7, 0]]
    assert batch["targets"].T.tolist() == [[5, 6, 2], [7, 2, IGNORE]]
    assert batch["first"] and batch["tokens"] == 5


@needs_data
@pytest.mark.parametrize(("protocol", "pieces"), [("stream", 1), ("stream", 3), ("sentence", 1)])
def test_evaluation_predicts_every_word_and_eos_of_the_split_once(corpus, protocol, pieces):
    corpus.hparams.update(protocol=protocol, eval_streams=pieces, eval_batch_size=500)
    try:
        batches = corpus.evaluation_batches("valid")
    finally:
        corpus.hparams.update(protocol="stream", eval_streams=1)
    if protocol == "stream":  # the pieces side by side: row k of every window, in order, is piece k
        targets = torch.cat([b["targets"] for b in batches]).T.flatten()
    else:
        targets = torch.cat([b["targets"].T.flatten() for b in batches])
    predicted = targets[targets != IGNORE]
    assert len(predicted) == TOKENS["valid"] == 73_760
    assert torch.equal(predicted, torch.from_numpy(corpus.parts["valid"][0]))


@needs_data
def test_training_batches_are_the_cpu_tiers_layout_and_sentences_are_reshuffled_each_epoch(corpus):
    batches = corpus.training_batches(0)
    assert len(batches) == math.ceil(TOKENS["train"] // 20 / 35) == 1_328
    assert batches[0]["inputs"].shape == (35, 20) and batches[0]["inputs"][0, 0] == corpus.vocab.eos
    assert sum(b["tokens"] for b in batches) == TOKENS["train"] // 20 * 20
    corpus.hparams.update(protocol="sentence", batch_size=8, seed=3)
    try:
        first, again, second = (corpus.training_batches(e) for e in (0, 0, 1))
    finally:
        corpus.hparams.update(protocol="stream", batch_size=20, seed=1)
    assert len(first) == math.ceil(42_068 / 8) and first[0]["inputs"].shape[1] == 8
    assert sum(b["tokens"] for b in first) == TOKENS["train"]
    assert torch.equal(first[0]["targets"], again[0]["targets"])
    assert not torch.equal(first[0]["targets"][:, 0], second[0]["targets"][:, 0])


# --------------------------------------------------------------------------------------------------
# The metric and the model (spec §3, §6)


def test_perplexity_is_exp_of_the_mean_nll_over_the_predicted_tokens_only():
    """Logits fixed at log(1/2, 1/4, 1/8, 1/8): targets 0, 1, 2, 3 cost (1 + 2 + 3 + 3) ln 2; the padded
    target costs nothing and is not counted, so the perplexity is 2^(9/4)."""
    module = DepthGatedLM(vocab_size=4, embedding_size=3, hidden_size=5, layers=2)
    with torch.no_grad():
        module.readout.weight.zero_()
        module.readout.bias.copy_(torch.tensor([0.5, 0.25, 0.125, 0.125]).log())
    batch = {
        "inputs": torch.tensor([[0, 1], [2, 3], [1, 0]]),
        "targets": torch.tensor([[0, 1], [2, 3], [IGNORE, IGNORE]]),
    }
    nll, count, _ = module.token_nll(batch)
    nll = nll.detach()
    assert int(count) == 4 and float(nll) == pytest.approx(9 * math.log(2), rel=1e-6)
    module.nll.update(nll)
    module.count.update(count)
    mean, counted = module.pooled()
    assert counted == 4 and math.exp(mean) == pytest.approx(2 ** (9 / 4), rel=1e-6)


def cpu_tier_model(depth_gate: bool, **overrides) -> DepthGatedLM:
    args = dict(vocab_size=50, embedding_size=6, hidden_size=5, layers=3, forget_gate="separate")
    args.update(peepholes="none", stabiliser=False, depth_gate=depth_gate, **overrides)
    return DepthGatedLM(**args)


def test_dglstm_has_the_depth_gates_parameters_and_uses_them():
    """Same shared weights: the depth gate changes the output; shut (bias −∞) it gives the LSTM's exactly."""
    torch.manual_seed(0)
    dglstm, lstm = cpu_tier_model(True), cpu_tier_model(False)
    n, e = 5, 6
    # per layer: the depth gate's input weights, bias and peephole w_qd; layer 0 projects the embedding to its
    # lower cell (W_l), the layers above weigh the lower cell (w_ld)
    extra = (n * e + 2 * n + n * e) + 2 * (n * n + 2 * n + n)
    assert sum(p.numel() for p in dglstm.parameters()) - sum(p.numel() for p in lstm.parameters()) == extra
    assert [
        sorted(k for k, _ in layer.named_parameters() if "depth" in k or "lower" in k or "peephole" in k)
        for layer in dglstm.lstm.layers
    ] == [["peephole.d", "weight_lower"]] + [["depth_lower", "peephole.d"]] * 2
    shared = {
        k: v[:-n] if k.endswith(("weight_x", "bias")) and k.startswith("lstm") else v
        for k, v in dglstm.state_dict().items()
        if k in lstm.state_dict()
    }
    lstm.load_state_dict(shared)
    inputs = torch.randint(0, 50, (7, 3))
    gated, _ = dglstm(inputs)
    plain, _ = lstm(inputs)
    assert (gated - plain).abs().max() > 1e-3
    with torch.no_grad():
        for layer in dglstm.lstm.layers:
            layer.bias[-n:] = -torch.inf
    torch.testing.assert_close(dglstm(inputs)[0], plain)


def test_the_cpu_tiers_depth_gated_cell_has_a_correct_backward():
    """Separate forget gate, no peepholes, depth gate (tests/test_lstm.py checks the code's dglstm form):
    the hand-written backward against finite differences, float64."""
    torch.manual_seed(0)
    cell = LSTMVariant(forget_gate="on", peepholes="none", depth_gate=True)
    for lower in (False, True):
        layer = LSTMLayer(3, 4, cell, lower=lower).double()
        x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
        state = tuple(torch.randn(2, 4, dtype=torch.float64, requires_grad=True) for _ in range(2))
        lower_cells = torch.randn(5, 2, 4, dtype=torch.float64, requires_grad=True) if lower else None

        def run(x, h, c, *params, layer=layer, lower_cells=lower_cells):
            values = dict(zip([k for k, _ in layer.named_parameters()], params, strict=True))
            ys, cs, _ = torch.func.functional_call(layer, values, (x, (h, c), lower_cells))
            return ys, cs

        params = [p.detach().requires_grad_() for p in layer.parameters()]
        assert torch.autograd.gradcheck(run, (x, *state, *params))


def test_initialisation_is_the_toolkits_uniform_per_declared_parameter():
    torch.manual_seed(0)
    module = DepthGatedLM(vocab_size=1000, embedding_size=20, hidden_size=30, layers=2, forget_gate="coupled")
    first = module.lstm.layers[0]
    n = 30

    def bound(*dims):
        return math.sqrt(6 / sum(dims))

    checks = [(block, bound(n, 20)) for block in first.weight_x.split(n)]
    checks += [(block, bound(n, n)) for block in first.weight_r.split(n)]
    checks += [(block, bound(n)) for block in first.bias.split(n)]
    checks += [
        (first.peephole["i"], bound(n, n)),
        (first.peephole["d"], bound(n)),
        (first.weight_lower, bound(n, 20)),
    ]
    checks += [(module.embedding.weight, bound(20)), (module.readout.weight, bound(1000, n))]
    for block, limit in checks:
        assert 0.75 * limit < float(block.abs().max()) <= limit
    assert all(float(layer.stabiliser) == 0.0 for layer in module.lstm.layers)


def test_learning_rate_halves_after_each_validation_that_is_not_the_best_so_far():
    module = cpu_tier_model(True, lr=1.0, lr_decay=0.5)
    optimizer = module.configure_optimizers()
    for ppl in (300.0, 250.0, 260.0, 250.0, 240.0, 241.0):
        module.record_validation(ppl, optimizer)
    assert [p["lr"] for p in module.history] == [1.0, 1.0, 1.0, 0.5, 0.25, 0.25]
    assert optimizer.param_groups[0]["lr"] == 0.125 and module.best_ppl == 240.0


@pytest.mark.parametrize("tier", ["smoke", "cpu", "full"])
def test_each_tiers_lstm_and_dglstm_differ_in_the_depth_gate_alone(tier):
    """cpu and smoke: the suite's ``standard`` cell (torch.nn.LSTM's) with and without the depth gate; full:
    the official code's ``dglstm`` cell (coupled, full peepholes, stabiliser) with and without it."""
    paper = get_paper("depth_gated_lstm")
    lstm, dglstm = (config_lib.load(paper.config_path(e, tier)) for e in ("lstm_2x200", "dglstm_2x200"))
    assert lstm["model"]["init_args"]["depth_gate"] is False and dglstm["model"]["init_args"]["depth_gate"]
    dglstm_off = {**dglstm, "model": {**dglstm["model"], "init_args": {**dglstm["model"]["init_args"]}}}
    dglstm_off["model"]["init_args"]["depth_gate"] = False
    assert lstm == dglstm_off
    cells = [config_lib.instantiate(c)[0].lstm.config for c in (lstm, dglstm)]
    base = variant("dglstm" if tier == "full" else "standard")
    assert cells == [replace(base, depth_gate=False), replace(base, depth_gate=True)]


def test_unknown_forget_gate_is_named_with_the_valid_ones():
    with pytest.raises(ValueError, match="model.forget_gate must be one of separate, coupled, not 'on'"):
        DepthGatedLM(forget_gate="on")


@needs_data
def test_overfits_one_batch(corpus, one_thread):
    torch.manual_seed(0)
    batch = corpus.training_batches(0)[0]
    batch = {**batch, "inputs": batch["inputs"][:12, :4], "targets": batch["targets"][:12, :4]}
    module = DepthGatedLM(
        embedding_size=32,
        hidden_size=32,
        forget_gate="separate",
        peepholes="none",
        stabiliser=False,
        depth_gate=True,
    )
    optimizer = module.configure_optimizers()
    for step in range(60):
        nll, count, _ = module.token_nll(batch)
        optimizer.zero_grad()
        (nll / 4).backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 5.0)
        optimizer.step()
        if step == 0:
            start = float(nll / count)
    assert start > math.log(10_000) - 0.5 and float(nll / count) < 0.1 * start


# --------------------------------------------------------------------------------------------------
# Harness: smoke run, resume, DDP


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    if not ptb.ptb_path("train").exists():
        pytest.skip(f"no PTB under {data_root()}")
    root = tmp_path_factory.mktemp("dg_smoke")
    return runs.module_smoke("depth_gated_lstm", "dglstm_2x200", root), root


@pytest.mark.slow
def test_smoke_run_writes_a_full_record_with_checkpoints_and_logs(smoke_run):
    record, root = smoke_run
    metrics = record["metrics"]
    assert 100 < metrics["val_ppl"] < 10_000 and 100 < metrics["test_ppl"] < 10_000  # uniform: 10,000
    assert metrics["test_tokens"] == sum(
        len(line.split()) + 1 for line in ptb.ptb_path("test").read_text().splitlines()[:200]
    )
    assert [(d["path"].rsplit("/", 1)[1], d["sha256"]) for d in record["data"]] == [
        (f"ptb.{split}.txt", ptb.SHA256[split]) for split in ptb.SPLITS
    ]
    curve = record["details"]["val_curve"]
    assert [p["epoch"] for p in curve] == [0, 1] and metrics["val_ppl"] == pytest.approx(
        min(p["val_ppl"] for p in curve), rel=1e-6
    )
    assert curve[1]["trained_tokens"] == 2 * curve[0]["trained_tokens"] > 0
    work = root / "depth_gated_lstm" / "dglstm_2x200" / "smoke" / "seed1"
    assert sorted(p.name for p in (work / "checkpoints").glob("*.ckpt")) == ["epoch000.ckpt", "epoch001.ckpt"]
    assert {"val/ppl", "train/ppl", "test_ppl"} <= set(
        (work / "csv" / "metrics.csv").read_text().split("\n")[0].split(",")
    )


@needs_data
@pytest.mark.slow
def test_resume_equals_uninterrupted(tmp_path, harness_state):
    resumed, straight = runs.resumed_and_straight("depth_gated_lstm", "dglstm_2x200", tmp_path)
    assert resumed["metrics"] == straight["metrics"]
    assert resumed["details"] == straight["details"]


@needs_data
@pytest.mark.slow
def test_ddp_two_cpu_processes_train_the_single_process_model(smoke_run, tmp_path):
    """Each rank takes every other stream of each window and the loss is averaged over the rank's streams, so
    DDP's averaged gradient is the single-process one; evaluation sums both ranks' streams."""
    single, _ = smoke_run
    record = runs.ddp_smoke("depth_gated_lstm", "dglstm_2x200", tmp_path)
    assert record["metrics"]["test_tokens"] == single["metrics"]["test_tokens"]
    assert record["metrics"]["test_ppl"] == pytest.approx(single["metrics"]["test_ppl"], rel=1e-4)
    trained = [p["trained_tokens"] for p in record["details"]["val_curve"]]
    assert trained == [p["trained_tokens"] for p in single["details"]["val_curve"]]


# --------------------------------------------------------------------------------------------------
# Figures: the validation curves of both models on one axes, the comparison table


def write_ppl_records(root, test_ppl: dict[str, list[float]]) -> None:
    """Seed records (test perplexity, a 3-epoch validation curve) for the figures, one per value."""
    for experiment, values in test_ppl.items():
        for seed, value in enumerate(values, start=1):
            curve = [
                {
                    "epoch": e,
                    "step": e,
                    "trained_tokens": (e + 1) * 929_580,
                    "lr": 1.0,
                    "val_ppl": value + 50 / (e + 1),
                }
                for e in range(3)
            ]
            record = {
                "seed": seed,
                "metrics": {"test_ppl": value, "val_ppl": value + 17, "test_tokens": 82_430.0},
                "details": {"val_curve": curve},
            }
            results.write_json(results.record_path("depth_gated_lstm", experiment, "cpu", seed, root), record)


def test_figures_put_both_curves_on_one_png_and_check_the_relative_claim(tmp_path):
    from papers.depth_gated_lstm import figures

    write_ppl_records(tmp_path, {"lstm_2x200": [150.0, 152.0], "dglstm_2x200": [140.0, 141.0]})
    paths = figures.make_figures(tmp_path / "depth_gated_lstm", "cpu")
    assert [p.name for p in paths] == ["val_ppl_2x200_cpu.png", "comparison_cpu.md"]
    assert paths[0].stat().st_size > 10_000
    table = paths[1].read_text()
    assert "| LSTM | 2 | 151.00 ± 1.41 | 168.00 ± 1.41 | 82,430 |" in table
    assert "| DGLSTM | 2 | 140.50 ± 0.71 |" in table
    assert "- relative check: DGLSTM − LSTM = -10.50 against a seed spread of 2.12: holds" in table
    assert figures.make_figures(tmp_path / "depth_gated_lstm", "full") == []


def test_the_depth_sweep_figure_needs_both_models_at_two_depths_of_one_width(tmp_path):
    from papers.depth_gated_lstm import figures

    write_ppl_records(tmp_path, {"lstm_1x100": [150.0], "dglstm_1x100": [148.0], "lstm_2x100": [149.0]})
    names = [p.name for p in figures.make_figures(tmp_path / "depth_gated_lstm", "cpu")]
    assert "test_ppl_by_depth_x100_cpu.png" not in names  # 2 layers: the LSTM alone
    write_ppl_records(tmp_path, {"dglstm_2x100": [141.0]})
    paths = figures.make_figures(tmp_path / "depth_gated_lstm", "cpu")
    assert paths[-1].name == "test_ppl_by_depth_x100_cpu.png" and paths[-1].stat().st_size > 10_000


def test_a_diverged_runs_perplexity_is_inf_not_an_overflow_error():
    from papers.depth_gated_lstm.model import perplexity

    assert perplexity(math.log(120.0)) == pytest.approx(120.0)
    assert perplexity(1e4) == math.inf
