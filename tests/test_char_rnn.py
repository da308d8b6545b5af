"""Tests for papers/char_rnn (data, model, module, harness runs, grid) against /work/shared/specs/char_rnn.md.

The n-gram baseline (papers/char_rnn/ngram.py) has its own test file. Tests that read the shipped corpora skip
only when the data root has no ``war_and_peace`` (or ``linux_kernel``) folder; set REPRO_DATA=../shared/data.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback

from papers.char_rnn import data as char_data
from papers.char_rnn import grid
from papers.char_rnn.data import (
    CORPORA,
    CharData,
    Corpus,
    Vocabulary,
    Windows,
    corpus_file,
    read_bytes,
    split,
    streams,
)
from papers.char_rnn.model import CharRNN, CharRNNModule, detach, matched_hidden, parameter_count
from repro.data import DataError, data_root
from tests import runs

REPO = Path(__file__).resolve().parent.parent
WP_DIR = data_root() / "war_and_peace"
LK_DIR = data_root() / "linux_kernel"
WP_FILE = WP_DIR / "warpeace_input.txt"
needs_data = pytest.mark.skipif(
    not WP_DIR.exists(), reason=f"no War and Peace under {WP_DIR}; set REPRO_DATA=../shared/data"
)
needs_linux = pytest.mark.skipif(
    not LK_DIR.exists(), reason=f"no Linux corpus under {LK_DIR}; set REPRO_DATA=../shared/data"
)

pytestmark = pytest.mark.usefixtures("one_thread")

WP_BYTES, WP_K = 3_258_246, 87
LK_BYTES, LK_K = 6_206_996, 124


@pytest.fixture(scope="module")
def wp():
    """War and Peace as the verified uint8 byte array."""
    if not WP_DIR.exists():
        pytest.skip(f"no War and Peace under {WP_DIR}")
    return read_bytes("war_and_peace")


# -----------------------------------------------------------------------------
# Data: the shipped corpora (spec §2, §7.1)


@needs_data
def test_war_and_peace_as_bytes_has_the_papers_length_and_87_symbols(wp):
    assert len(wp) == WP_BYTES and wp.dtype == np.uint8
    assert len(np.unique(wp)) == WP_K and len(Vocabulary.of(wp)) == WP_K
    assert bytes(wp[:3]) == b"\xef\xbb\xbf"  # the UTF-8 BOM is part of the byte stream
    # The pitfall (spec §7.1): text mode turns CRLF into LF and merges multi-byte characters: another task.
    text = WP_FILE.read_text(encoding="utf-8")
    assert len(text) == 3_196_213 and len(set(text)) == 83


@needs_linux
def test_linux_substitute_decompresses_to_the_papers_length_and_124_symbols():
    raw = read_bytes("linux_kernel")
    assert len(raw) == LK_BYTES and len(Vocabulary.of(raw)) == LK_K
    assert hashlib.sha256(raw.tobytes()).hexdigest() == CORPORA["linux_kernel"].text_sha


@needs_data
def test_vocabulary_is_byte_order_and_round_trips(wp):
    vocab = Vocabulary.of(wp)
    assert np.all(np.diff(vocab.symbols.astype(int)) > 0)  # sorted bytes
    assert vocab.symbols[0] == ord("\n") and vocab.symbols[1] == ord("\r") and vocab.symbols[2] == ord(" ")
    assert vocab.encode(b"\n\r ").tolist() == [0, 1, 2]
    assert vocab.encode(bytes([vocab.symbols[-1]])).tolist() == [WP_K - 1]
    assert np.array_equal(vocab.symbols, np.unique(wp))
    assert vocab.encode(vocab.symbols.tobytes()).tolist() == list(range(WP_K))  # id = rank of the byte value
    piece = wp[:100_000]
    ids = vocab.encode(piece)
    assert ids.min() >= 0 and ids.max() < WP_K
    assert vocab.decode(ids) == piece.tobytes()
    absent = next(b for b in range(256) if b not in set(vocab.symbols.tolist()))
    with pytest.raises(ValueError, match=rf"bytes \[{absent}\] are not in this corpus's vocabulary"):
        vocab.encode(b"ab" + bytes([absent]))


def test_vocabulary_ids_follow_byte_values_not_first_appearance():
    vocab = Vocabulary.of(np.frombuffer(b"zzyax", dtype=np.uint8))
    assert vocab.decode([0, 1, 2, 3]) == b"axyz"
    assert vocab.encode(b"zyax").tolist() == [3, 2, 0, 1]


# -----------------------------------------------------------------------------
# Data: bad input


@needs_data
def test_corrupt_war_and_peace_fails_its_checksum_and_names_the_file(tmp_path):
    copy = tmp_path / "war_and_peace" / "warpeace_input.txt"
    copy.parent.mkdir()
    raw = bytearray(WP_FILE.read_bytes())
    raw[1000] ^= 1  # one flipped bit
    copy.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="checksum") as err:
        corpus_file("war_and_peace", root=tmp_path)
    assert str(copy) in str(err.value) and CORPORA["war_and_peace"].sha in str(err.value)


def test_missing_linux_corpus_points_to_the_build_recipe(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_DATA", str(tmp_path))
    with pytest.raises(DataError, match="SOURCE.md") as err:
        CharData(corpus="linux_kernel").prepare_data()
    assert str(tmp_path / "linux_kernel" / "linux_kernel_corpus.txt.gz") in str(err.value)


def test_linux_archive_with_other_text_is_refused(tmp_path, monkeypatch):
    """The archive's own checksum matches (it is pinned here to this fake), but the text inside is not the
    pinned build: read_bytes names the file and the pinned text hash."""
    text = b"int main(void) { return 0; }\n"
    gz = tmp_path / "linux_kernel" / "linux_kernel_corpus.txt.gz"
    gz.parent.mkdir()
    gz.write_bytes(gzip.compress(text))
    gz_sha = hashlib.sha256(gz.read_bytes()).hexdigest()
    pinned = CORPORA["linux_kernel"].text_sha
    fake = Corpus("linux_kernel", gz.name, gz_sha, None, text_sha=pinned)
    monkeypatch.setitem(char_data.CORPORA, "linux_kernel", fake)
    with pytest.raises(DataError, match=f"decompresses to text whose sha256 is not {pinned}") as err:
        read_bytes("linux_kernel", root=tmp_path)
    assert str(gz) in str(err.value) and "SOURCE.md" in str(err.value)
    # The same archive with its own text hash pinned is accepted: the check compares, it does not always fail.
    right = Corpus("linux_kernel", gz.name, gz_sha, None, text_sha=hashlib.sha256(text).hexdigest())
    monkeypatch.setitem(char_data.CORPORA, "linux_kernel", right)
    assert read_bytes("linux_kernel", root=tmp_path).tobytes() == text


def test_unknown_corpus_is_refused():
    with pytest.raises(ValueError, match="data.corpus must be one of war_and_peace, linux_kernel"):
        CharData(corpus="shakespeare")


# -----------------------------------------------------------------------------
# split() (spec §2, §7.2)


@needs_data
def test_war_and_peace_split_is_contiguous_80_10_10_by_position(wp):
    data = CharData(corpus="war_and_peace", split=(0.8, 0.1, 0.1))
    data.setup()
    train, val, test = data.parts["train"], data.parts["val"], data.parts["test"]
    assert (len(train), len(val), len(test)) == (2_606_597, 325_825, 325_824)
    ids = data.vocab.encode(wp)
    assert np.array_equal(np.concatenate([train, val, test]), ids)
    assert data.vocab.decode(test[-20:]) == wp[-20:].tobytes()  # the test split is the file's tail


def test_split_fractions_must_sum_to_one():
    ids = np.arange(100)
    for bad in [(0.8, 0.1, 0.2), (0.9, 0.1), (1.1, -0.1, 0.0)]:
        with pytest.raises(ValueError, match="data.split must be three fractions summing to 1"):
            split(ids, bad)
    train, val, test = split(ids, (0.9, 0.0, 0.1))
    assert (len(train), len(val), len(test)) == (90, 0, 10) and test[0] == 90


# -----------------------------------------------------------------------------
# streams() and windows (spec §3.3, §3.4)


@pytest.mark.parametrize("n, count, multiple", [(1003, 4, 10), (1000, 7, 13), (101, 1, 1), (5000, 100, 1)])
def test_streams_are_contiguous_rows_with_targets_one_ahead(n, count, multiple):
    text = np.arange(n)
    inputs, targets = streams(text, count, multiple)
    length = inputs.shape[1]
    assert inputs.shape == targets.shape == (count, length)
    assert length > 0 and length % multiple == 0
    left_out = (n - 1) - count * length
    assert 0 <= left_out < count * multiple
    for row in range(count):
        start = row * length
        assert inputs[row].tolist() == text[start : start + length].tolist()
        assert targets[row].tolist() == text[start + 1 : start + length + 1].tolist()
    if count == 1 and multiple == 1:
        assert targets[0].tolist() == text[1:].tolist()  # every character but the first is predicted


def test_streams_too_short_for_the_batch_is_explained():
    with pytest.raises(ValueError, match="lower data.batch_size or data.unroll"):
        streams(np.arange(40), 10, 5)


def test_consecutive_windows_continue_each_other_and_repeat_in_place():
    inputs, targets = streams(np.arange(203), 4, 10)
    windows = list(Windows(inputs, targets, 10, repeats=3))
    assert len(windows) == len(Windows(inputs, targets, 10, repeats=3)) == 5 * 3
    assert [w["repeat"] for w in windows] == [0, 1, 2] * 5
    firsts = windows[::3]
    for w in windows:
        assert w["inputs"].shape == (4, 10)
    for j in range(3):
        assert torch.equal(windows[j]["inputs"], firsts[0]["inputs"])  # a repeat is the same window
    for a, b in zip(firsts, firsts[1:], strict=False):
        # The next window starts where this one stopped: its first input is this one's last target.
        assert torch.equal(b["inputs"][:, 0], a["targets"][:, -1])
        assert torch.equal(b["inputs"][:, 0], a["inputs"][:, -1] + 1)
    assert torch.equal(torch.cat([w["inputs"] for w in firsts], 1), inputs)


def fake_trainer(world, rank, epoch=0):
    progress = SimpleNamespace(current=SimpleNamespace(processed=epoch))
    return SimpleNamespace(
        world_size=world, global_rank=rank, fit_loop=SimpleNamespace(epoch_progress=progress)
    )


def small_data(**kwargs):
    """A CharData over a synthetic id sequence (positions mod 50), no file read."""
    args = {"batch_size": 4, "unroll": 10, "eval_chunk": 30, **kwargs}
    data = CharData(**args)
    text = (np.arange(2000) % 50).astype(np.uint8)
    data.parts = dict(zip(("train", "val", "test"), split(text, (0.8, 0.1, 0.1)), strict=True))
    return data


def test_window_repeats_follow_the_epoch_and_the_last_entry_holds():
    """Lightning builds the training loader once per fit: the same loader must follow the epoch."""
    data = small_data(window_repeats=(5, 2, 1))
    windows = (1600 - 1) // 4 // 10  # 39 windows of 10 columns per stream
    data.trainer = fake_trainer(1, 0, epoch=0)
    loader = data.train_dataloader()
    for epoch, repeats in [(0, 5), (1, 2), (2, 1), (7, 1)]:
        data.trainer.fit_loop.epoch_progress.current.processed = epoch
        batches = list(loader)
        assert len(batches) == windows * repeats, epoch
        assert [b["repeat"] for b in batches[: 2 * repeats]] == list(range(repeats)) * 2


def test_ddp_ranks_take_interleaved_streams_and_cover_each_once():
    data = small_data(batch_size=6)
    inputs, _ = streams(data.parts["train"], 6, 10)
    per_rank = []
    for rank in (0, 1):
        data.trainer = fake_trainer(2, rank)
        batches = list(data.train_dataloader())
        rows = torch.cat([b["inputs"] for b in batches], 1)
        assert torch.equal(rows, inputs[rank::2])
        per_rank.append(batches)
    assert len(per_rank[0]) == len(per_rank[1])  # the ranks step in lockstep over the same columns
    seen = sorted(tuple(r.tolist()) for rank in per_rank for r in torch.cat([b["inputs"] for b in rank], 1))
    assert seen == sorted(tuple(r.tolist()) for r in inputs)


def test_ddp_evaluation_keeps_ranks_in_step_when_streams_are_fewer_than_devices():
    """eval_streams=1 on 2 devices: rank 1 has no stream but must still walk the same windows (with empty
    batches): Lightning refuses a zero-length loader on one rank, and the metric sync needs every rank."""
    data = small_data(eval_streams=1)
    loaders = []
    for rank in (0, 1):
        data.trainer = fake_trainer(2, rank)
        loader = data.test_dataloader()
        assert len(loader) == math.ceil(199 / 30)  # the length Lightning checks on every rank
        loaders.append(list(loader))
    zero, one = loaders
    assert len(zero) == len(one) == math.ceil(199 / 30)
    assert all(b["inputs"].shape[0] == 1 for b in zero) and all(b["inputs"].shape[0] == 0 for b in one)
    assert sum(b["targets"].numel() for b in zero + one) == 200 - 1


def test_batch_size_must_divide_among_devices():
    data = small_data(batch_size=5)
    data.trainer = fake_trainer(2, 0)
    with pytest.raises(ValueError, match="data.batch_size 5 must be divisible by the 2 devices"):
        data.train_dataloader()


# -----------------------------------------------------------------------------
# Model (spec §3.2, §3.3, §3.4, §7.4, §7.7)

GOLDEN = {(1, 64): 44_823, (1, 128): 122_327, (2, 256): 901_975, (3, 512): 5_477_975}


@pytest.mark.parametrize("layers, hidden", list(GOLDEN))
def test_parameter_counts_are_the_specs_golden_values(layers, hidden):
    assert parameter_count("lstm", hidden, layers, WP_K) == GOLDEN[(layers, hidden)]
    net = CharRNN(WP_K, "lstm", hidden, layers)
    assert sum(p.numel() for p in net.parameters()) == GOLDEN[(layers, hidden)]


@pytest.mark.parametrize("cell", ["gru", "rnn"])
def test_matched_hidden_sizes_keep_the_lstm_budget_within_one_percent(cell):
    for vocab in (WP_K, LK_K):
        for layers in (1, 2, 3):
            for budget in (64, 128, 256, 512):
                hidden = matched_hidden(cell, budget, layers, vocab)
                target = parameter_count("lstm", budget, layers, vocab)
                assert abs(parameter_count(cell, hidden, layers, vocab) / target - 1) < 0.01
                assert hidden > budget  # fewer gates buy more units
    net = CharRNN(WP_K, cell, 37, 2)  # the formula counts what torch builds
    assert sum(p.numel() for p in net.parameters()) == parameter_count(cell, 37, 2, WP_K)


def test_input_is_one_hot_with_no_embedding():
    net = CharRNN(WP_K, "lstm", 32, 3)
    assert not any(isinstance(m, torch.nn.Embedding) for m in net.modules())
    assert [layer.input_size for layer in net.layers] == [WP_K, 32, 32]
    x = torch.tensor([[3, 86, 0, 3]])
    expected, _ = net.layers[0](F.one_hot(x, WP_K).float(), net.zero_state(1)[0])
    seen = []
    net.layers[1].register_forward_pre_hook(lambda mod, args: seen.append(args[0]))
    net(x, net.zero_state(1))
    assert torch.equal(seen[0], expected)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_charrnn_init_is_uniform_008_with_the_forget_bias_at_one(cell):
    hidden = 48
    torch.manual_seed(0)
    net = CharRNN(WP_K, cell, hidden, 2, init="charrnn")
    forget = slice(hidden, 2 * hidden)  # PyTorch's i, f, g, o
    for name, p in net.named_parameters():
        values = p.detach()
        if cell == "lstm" and name.endswith("bias_ih_l0"):
            assert torch.all(values[forget] == 1.0), name
            values = torch.cat([values[:hidden], values[2 * hidden :]])
        assert values.abs().max() <= 0.08 and values.abs().max() > 0.05, name  # U(-0.08, 0.08), not default
        assert p.requires_grad
    if cell == "lstm":
        for layer in net.layers:
            assert layer.bias_hh_l0[forget].abs().max() <= 0.08  # only one of the two biases is set


def test_pycaffe_init_small_weights_zero_biases_and_frozen_hidden_bias():
    module = CharRNNModule(vocab_size=LK_K, hidden_size=32, layers=2, init="pycaffe", bias_lr_mult=2.0)
    net = module.net
    for name, p in net.named_parameters():
        if "bias" in name:
            assert torch.all(p == 0), name
        else:
            assert p.abs().max() <= 0.01 and p.abs().max() > 0.009, name
        assert p.requires_grad == ("bias_hh" not in name), name
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    assert trainable == parameter_count("lstm", 32, 2, LK_K) - 2 * 4 * 32
    optimizer = module.configure_optimizers()
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert all((id(p) in in_optimizer) == p.requires_grad for p in net.parameters())
    assert [g["lr"] for g in optimizer.param_groups] == [module.hparams.lr, 2 * module.hparams.lr]
    x = torch.randint(0, LK_K, (3, 20))
    nll, _ = module.nats({"inputs": x, "targets": x.roll(-1, 1)})
    nll.backward()
    optimizer.step()
    assert all(torch.all(layer.bias_hh_l0 == 0) for layer in net.layers)
    assert any(torch.any(layer.bias_ih_l0 != 0) for layer in net.layers)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_trace_recomputes_the_forward_pass(cell):
    torch.manual_seed(0)
    net = CharRNN(WP_K, cell, 24, 2).eval()
    x = torch.randint(0, WP_K, (40,))
    logits, _ = net(x[None], net.zero_state(1))
    trace = net.trace(x)
    assert len(trace) == 2 and all(step["h"].shape == (40, 24) for step in trace)
    with torch.no_grad():
        assert torch.allclose(net.decoder(trace[-1]["h"]), logits[0], atol=1e-5)
    gates = {"lstm": "ifo", "gru": "rz", "rnn": ""}[cell]
    for layer in trace:
        for gate in gates:
            assert layer[gate].min() > 0 and layer[gate].max() < 1, gate
    if cell == "lstm":
        for layer in trace:
            assert torch.allclose(layer["h"], layer["o"] * layer["c"].tanh())
            assert layer["g"].abs().max() < 1


# -----------------------------------------------------------------------------
# Truncated BPTT in CharRNNModule (spec §3.3)


def small_module(**kwargs):
    torch.manual_seed(0)
    args = {"vocab_size": WP_K, "hidden_size": 16, "layers": 2, **kwargs}
    return CharRNNModule(**args)


def window(x, start, stop, repeat=0):
    return {"inputs": x[:, start:stop], "targets": x[:, start + 1 : stop + 1], "repeat": repeat}


def test_state_carried_across_windows_equals_one_long_forward():
    module = small_module().eval()
    x = torch.randint(0, WP_K, (3, 61))
    with torch.no_grad():
        module.state = None
        whole, _ = module.nats(window(x, 0, 60))
        module.state = None
        first, state = module.nats(window(x, 0, 25))
        module.state = detach(state)  # as training_step does
        second, _ = module.nats(window(x, 25, 60))
        module.state = None
        cold, _ = module.nats(window(x, 25, 60))
    assert float(first + second) == pytest.approx(float(whole), rel=1e-6)
    assert abs(float(cold - second)) > 1e-3  # the carried state matters: starting from zeros differs


def test_a_repeated_window_starts_from_the_state_of_its_first_pass():
    module = small_module().eval()
    x = torch.randint(0, WP_K, (3, 41))
    with torch.no_grad():
        module.state = None
        _, state = module.nats(window(x, 0, 20))
        module.state = detach(state)
        start = module.state
        once, state = module.nats(window(x, 20, 40, repeat=0))
        module.state = detach(state)
        assert module.continue_from(window(x, 20, 40, repeat=1)) is start
        again, _ = module.nats(window(x, 20, 40, repeat=1))
        module.state = detach(state)
        onward, _ = module.nats(window(x, 20, 40, repeat=0))  # a new window would start from the end
    assert torch.equal(once, again)
    assert not torch.equal(once, onward)


def test_hooks_reset_the_state_for_each_pass():
    module = small_module()
    for hook in ("on_train_epoch_start", "on_validation_epoch_start", "on_test_epoch_start"):
        module.state = module.net.zero_state(2)
        getattr(module, hook)()
        assert module.state is None, hook


class Recorder(Callback):
    """What a real fit does: the state at every batch start and the lr of every optimiser step."""

    def __init__(self):
        self.train, self.val, self.lrs, self.ends = [], [], [], []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.train.append((trainer.current_epoch, batch_idx, module.state))

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.ends.append(module.state)

    def on_validation_batch_start(self, trainer, module, batch, batch_idx, dataloader_idx=0):
        self.val.append((batch_idx, module.state, self.ends[-1]))

    def on_before_optimizer_step(self, trainer, module, optimizer):
        self.lrs.append((trainer.current_epoch, [g["lr"] for g in optimizer.param_groups]))


def quiet_trainer(**kwargs):
    args = {
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        **kwargs,
    }
    return L.Trainer(**args)


@needs_data
@pytest.mark.slow
def test_fit_resets_state_per_epoch_and_validation_and_decays_the_lr():
    """Validation only after epoch 1, so epoch 1 starts right after a training epoch: its reset is its own."""
    module = small_module(layers=1, lr=0.01, lr_decay=0.5, lr_decay_after=1, bias_lr_mult=3.0)
    data = CharData(batch_size=4, unroll=20, eval_chunk=100, limit_chars=4000)
    recorder = Recorder()
    trainer = quiet_trainer(
        max_epochs=2, limit_train_batches=4, check_val_every_n_epoch=2, callbacks=[recorder]
    )
    trainer.fit(module, datamodule=data)
    assert [(e, i) for e, i, _ in recorder.train] == [(e, i) for e in (0, 1) for i in range(4)]
    for (epoch, i, state), before in zip(recorder.train, [None, *recorder.ends], strict=False):
        if i == 0:
            assert state is None, epoch
        else:
            assert state is before and state[0][0].shape == (1, 4, 16)  # carried from the previous batch
    assert len(recorder.val) == 4  # 399 predicted characters in windows of 100
    assert recorder.val[0][1] is None and recorder.val[0][2] is not None  # reset although training left one
    assert recorder.val[1][1] is not None and recorder.val[1][1][0][0].shape == (1, 1, 16)
    assert [epoch for epoch, _ in recorder.lrs] == [0] * 4 + [1] * 4
    lrs = [lr for _, groups in recorder.lrs for lr in groups]
    # (weights, biases at 3x) in epoch 0, then x0.5 in epoch 1 (lr_decay_after 1)
    assert lrs == pytest.approx([0.01, 0.03] * 4 + [0.005, 0.015] * 4)


# -----------------------------------------------------------------------------
# Dropout


def test_dropout_from_layer_two_leaves_the_first_layer_and_drops_the_rest():
    net = CharRNN(WP_K, "lstm", 64, 3, dropout=0.5, dropout_from_layer=2)
    outputs, inputs = [], []
    for layer in net.layers:
        layer.register_forward_hook(lambda mod, args, out: outputs.append(out[0].detach()))
    for mod in (*net.layers[1:], net.decoder):
        mod.register_forward_pre_hook(lambda mod, args: inputs.append(args[0].detach()))
    x = torch.randint(0, WP_K, (4, 30))
    net.train()(x, net.zero_state(4))
    assert torch.equal(inputs[0], outputs[0])  # layer 1 -> layer 2: untouched
    for fed, out in [(inputs[1], outputs[1]), (inputs[2], outputs[2])]:  # layer 2 -> 3, layer 3 -> decoder
        dropped = fed == 0
        assert 0.35 < dropped.float().mean() < 0.65
        assert torch.allclose(fed[~dropped], out[~dropped] / 0.5)
    outputs.clear()
    inputs.clear()
    net.eval()(x, net.zero_state(4))
    assert all(torch.equal(fed, out) for fed, out in zip(inputs, outputs, strict=True))


def test_charrnn_dropout_acts_on_every_layer_output_and_masks_are_reproducible():
    net = CharRNN(WP_K, "lstm", 32, 1, dropout=0.3).train()  # dropout_from_layer 1: char-rnn
    x = torch.randint(0, WP_K, (2, 20))
    net.reseed_dropout(11)
    first, _ = net(x, net.zero_state(2))
    second, _ = net(x, net.zero_state(2))
    net.reseed_dropout(11)
    again, _ = net(x, net.zero_state(2))
    assert torch.equal(first, again) and not torch.equal(first, second)
    net.eval()
    plain, _ = net(x, net.zero_state(2))
    assert not torch.equal(first, plain)


# -----------------------------------------------------------------------------
# Learning-rate schedules (spec §3.3, §3.4)


def test_charrnn_rule_decays_097_per_epoch_from_epoch_ten():
    module = small_module(lr_decay=0.97, lr_decay_after=10)
    factors = [module.learning_rate_factor(epoch, step=1000) for epoch in range(13)]
    assert factors[:10] == [1.0] * 10
    assert factors[10] == pytest.approx(0.97) and factors[11] == pytest.approx(0.97**2)
    assert factors[12] == pytest.approx(0.97**3)


def test_pycaffe_rule_multiplies_by_gamma_every_step():
    module = small_module(lr_decay=1.0, lr_step_gamma=0.9999)
    assert module.learning_rate_factor(0, 0) == 1.0
    assert module.learning_rate_factor(3, 1) == pytest.approx(0.9999)
    assert module.learning_rate_factor(5, 10_000) == pytest.approx(0.9999**10_000)


# -----------------------------------------------------------------------------
# Metrics (spec §6): golden values through a real test loop


@needs_data
@pytest.mark.slow
def test_uniform_model_scores_ln_k_nats_and_log2_k_bits_on_every_test_character():
    data = CharData(batch_size=4, unroll=20, eval_chunk=300, limit_chars=10_000)
    module = small_module()
    with torch.no_grad():
        module.net.decoder.weight.zero_()
        module.net.decoder.bias.zero_()
    metrics = quiet_trainer().test(module, datamodule=data, verbose=False)[0]
    assert metrics["test_nats"] == pytest.approx(math.log(WP_K), abs=1e-5)
    assert metrics["test_bpc"] == pytest.approx(math.log2(WP_K), abs=1e-5)
    assert metrics["test_characters"] == len(data.parts["test"]) - 1 == 999
    assert metrics["parameters"] == parameter_count("lstm", 16, 2, WP_K)


# -----------------------------------------------------------------------------
# Learning


@needs_data
@pytest.mark.slow
def test_overfits_one_window_of_war_and_peace(wp):
    vocab = Vocabulary.of(wp)
    inputs, targets = streams(vocab.encode(wp[:1021]), 20, 50)
    batch = {"inputs": inputs, "targets": targets}
    module = small_module(hidden_size=64, layers=1, lr=1e-2)
    optimizer = module.configure_optimizers()
    losses = []
    for _ in range(300):
        module.state = None
        nll, _ = module.nats(batch)
        loss = nll / targets.numel()
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_value_(module.parameters(), 5)
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] > 3 and losses[-1] < 0.2


# -----------------------------------------------------------------------------
# Harness: smoke run, resume, pycaffe, DDP


def run(root, overrides=(), resume=False, experiment="wp_lstm_2x64"):
    return runs.smoke("char_rnn", experiment, root, overrides, resume)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    if not WP_DIR.exists():
        pytest.skip(f"no War and Peace under {WP_DIR}")
    root = tmp_path_factory.mktemp("char_rnn_smoke")
    record = runs.module_smoke("char_rnn", "wp_lstm_2x64", root)
    return record, root


@pytest.mark.slow
def test_smoke_run_writes_a_full_record_with_checkpoints_and_logs(smoke_run):
    record, root = smoke_run
    metrics = record["metrics"]
    assert 2.0 < metrics["test_nats"] < math.log(WP_K) + 0.5
    assert metrics["test_bpc"] == pytest.approx(metrics["test_nats"] / math.log(2), rel=1e-6)
    assert 2.0 < metrics["val_nats"] < math.log(WP_K) + 0.5
    assert metrics["parameters"] == parameter_count("lstm", 64, 2, WP_K) == 78_103
    assert metrics["test_characters"] == 2000 - 1  # the 10% test split of 20,000 bytes, one stream
    assert record["epochs_trained"] == 2 and record["config"]["model"]["init_args"]["vocab_size"] == WP_K
    assert record["config"]["data"]["init_args"]["limit_chars"] == 20_000
    assert [(Path(d["path"]).name, d["sha256"]) for d in record["data"]] == [
        ("warpeace_input.txt", CORPORA["war_and_peace"].sha)
    ]
    stored = json.loads((root / "char_rnn" / "wp_lstm_2x64" / "smoke" / "seed1.json").read_text())
    assert stored["metrics"] == metrics
    work = root / "char_rnn" / "wp_lstm_2x64" / "smoke" / "seed1"
    assert sorted(p.name for p in (work / "checkpoints").glob("*.ckpt")) == ["epoch000.ckpt", "epoch001.ckpt"]
    lines = (work / "csv" / "metrics.csv").read_text().splitlines()
    header = lines[0].split(",")
    assert {"val/nats", "train/nats", "lr", "test_nats"} <= set(header)
    rows = [dict(zip(header, line.split(","), strict=True)) for line in lines[1:]]
    lrs = [float(r["lr"]) for r in rows if r["lr"] and r["epoch"] == "1"]
    assert lrs and all(lr == pytest.approx(0.002 * 0.95, rel=1e-6) for lr in lrs)  # lr_decay_after 1


@needs_data
@pytest.mark.slow
def test_resume_equals_uninterrupted(smoke_run, tmp_path, harness_state):
    straight, straight_root = smoke_run
    run(tmp_path, ["trainer.max_epochs=1"])
    resumed = run(tmp_path, [], resume=True)
    assert resumed["resumed_from"] == "checkpoints/epoch000.ckpt"
    ckpt = "char_rnn/wp_lstm_2x64/smoke/seed1/checkpoints/epoch001.ckpt"
    a = torch.load(straight_root / ckpt, weights_only=False)
    b = torch.load(tmp_path / ckpt, weights_only=False)
    assert a["global_step"] == b["global_step"] == 16
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    assert resumed["metrics"] == straight["metrics"]


@needs_linux
@pytest.mark.slow
def test_pycaffe_smoke_runs_without_validation_repeats_windows_and_resumes(tmp_path, harness_state):
    """The full training split of 5,000 bytes (10 streams of 499, 9 windows of 50 each: 8 train, 1 test)
    instead of the smoke tier's 4 batches, so that the schedule shows: 5 steps per window in epoch 1, 2 in
    epoch 2. A run resumed after epoch 1 follows the schedule too and, dropout masks included, equals the
    uninterrupted one."""
    overrides = ["data.limit_chars=5000", "trainer.limit_train_batches=1.0"]
    record = run(tmp_path / "a", overrides, experiment="lk_pycaffe_lstm")
    metrics = record["metrics"]
    assert "val_nats" not in metrics and "best_epoch" not in metrics
    assert 0 < metrics["test_nats"] < math.log(LK_K) + 0.5
    assert metrics["test_characters"] == 10 * 50  # the last window of each of the 10 streams
    assert metrics["parameters"] == parameter_count("lstm_ch", 128, 2, LK_K) == 358_524
    windows = int((4999 // 10 // 50) * 0.9)
    assert windows == 8

    def steps(root):
        folder = root / "char_rnn" / "lk_pycaffe_lstm" / "smoke" / "seed1" / "checkpoints"
        return [torch.load(folder / f"epoch00{e}.ckpt", weights_only=False)["global_step"] for e in (0, 1)]

    assert steps(tmp_path / "a") == [5 * windows, 5 * windows + 2 * windows]
    run(tmp_path / "b", [*overrides, "trainer.max_epochs=1"], experiment="lk_pycaffe_lstm")
    resumed = run(tmp_path / "b", overrides, resume=True, experiment="lk_pycaffe_lstm")
    assert resumed["resumed_from"] == "checkpoints/epoch000.ckpt"
    assert steps(tmp_path / "b") == steps(tmp_path / "a")
    assert resumed["metrics"] == metrics


@needs_data
@pytest.mark.slow
def test_wrong_vocab_size_for_the_corpus_is_explained(tmp_path, harness_state):
    with pytest.raises(ValueError, match="model.vocab_size=87"):
        run(tmp_path, ["model.vocab_size=50"])


@needs_data
@pytest.mark.slow
def test_ddp_two_cpu_processes_train_the_single_process_model(smoke_run, tmp_path):
    """2 ranks take streams 0, 2, ... and 1, 3, ...; each averages its loss over its own characters, so DDP's
    mean of the two gradients is the single process mean over all streams. Evaluation reads one stream: rank
    1 walks the same windows with empty batches and the summed metrics are synced."""
    single, _ = smoke_run
    record = runs.ddp_smoke("char_rnn", "wp_lstm_2x64", tmp_path)
    assert record["metrics"]["test_characters"] == single["metrics"]["test_characters"]
    for key in ("test_nats", "val_nats"):
        assert record["metrics"][key] == pytest.approx(single["metrics"][key], abs=1e-4), key


# -----------------------------------------------------------------------------
# Grid: the committed configs and expected.yaml are grid.py's output


def test_committed_configs_and_expected_yaml_are_the_grids_output():
    folder = REPO / "papers" / "char_rnn"
    generated = grid.configs()
    committed = {p.name for p in (folder / "configs").glob("*.yaml")}
    assert committed == set(generated)
    assert len(generated) == 72 * 2 + 12 + 3  # smoke + full per cell, cpu for 12, and 3 pycaffe tiers
    for name, text in generated.items():
        assert (folder / "configs" / name).read_text() == text, name
    assert (folder / "expected.yaml").read_text() == grid.expected_yaml()


@needs_data
@pytest.mark.slow
def test_bench_quick_measures_harness_and_plain_loop_side_by_side(tmp_path):
    from papers.char_rnn import bench

    out = tmp_path / "bench" / "char_rnn.json"
    report = bench.main(out, quick=True)
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    (row,) = report["training"]
    assert (row["cell"], row["layers"], row["hidden"]) == ("lstm", 1, 64)
    assert row["harness_chars_per_s"] > 0 and row["plain_chars_per_s"] > 0
    assert row["ratio"] == pytest.approx(row["harness_chars_per_s"] / row["plain_chars_per_s"], rel=0.01)
    assert report["min_ratio"] == row["ratio"]
    assert len(row["plain_seconds"]) == len(row["harness_seconds"]) == 1  # --quick: one of each
