"""The char_rnn analyses (papers/char_rnn: trained.py, cells.py, saturation.py, sample.py), ``repro sample``.

No training: a checkpoint with the layout and keys a real run writes (``hyper_parameters``,
``datamodule_hyper_parameters``, ``state_dict`` with the ``net.`` prefix, ``char_rnn.best_weights``) is built
from randomly initialised models in a temporary runs folder.
"""

from __future__ import annotations

import html
import io
import json
import re

import numpy as np
import pytest
import torch
from rich.console import Console

from papers.char_rnn import cells, sample, saturation
from papers.char_rnn.model import CharRNNModule
from papers.char_rnn.trained import head_of_test, load
from repro import cli
from repro.data import data_root

WP = data_root() / "war_and_peace" / "warpeace_input.txt"
needs_wp = pytest.mark.skipif(not WP.exists(), reason=f"no War and Peace file at {WP}")
SMOKE_DATA = {  # papers/char_rnn/configs/wp_lstm_2x64-smoke.yaml
    "corpus": "war_and_peace",
    "split": [0.8, 0.1, 0.1],
    "batch_size": 10,
    "unroll": 50,
    "eval_streams": 1,
    "eval_chunk": 500,
    "window_repeats": [1],
    "limit_chars": 20000,
}


def module(cell: str, seed: int, hidden: int = 8, layers: int = 2) -> CharRNNModule:
    torch.manual_seed(seed)
    return CharRNNModule(vocab_size=87, cell=cell, hidden_size=hidden, layers=layers, lr_decay_after=1)


def fake_run(root, experiment: str, cell: str, best: bool = True, data_hparams: bool = True):
    """A run folder as ``repro.train`` leaves it: checkpoints/epoch000.ckpt and epoch001.ckpt (newest)."""
    folder = root / "char_rnn" / experiment / "smoke" / "seed1" / "checkpoints"
    folder.mkdir(parents=True)
    final, best_epoch = module(cell, 1), module(cell, 2)
    for epoch in (0, 1):
        checkpoint = {
            "epoch": epoch,
            "global_step": 8 * (epoch + 1),
            "state_dict": final.state_dict(),
            "hparams_name": "kwargs",
            "hyper_parameters": dict(final.hparams),
            "char_rnn": {
                "best_nats": 3.0 if best else float("inf"),
                "best_weights": best_epoch.net.state_dict() if best else None,
                "history": [{"epoch": 0, "val_nats": 3.0}] if best else [],
            },
        }
        if data_hparams:
            checkpoint["datamodule_hparams_name"] = "kwargs"
            checkpoint["datamodule_hyper_parameters"] = dict(SMOKE_DATA)
        torch.save(checkpoint, folder / f"epoch{epoch:03d}.ckpt")
    return final.net, best_epoch.net


@pytest.fixture
def runs(isolated_outputs, one_thread):
    return isolated_outputs / "runs"


# --------------------------------------------------------------------------------------------------
# loading a run
@needs_wp
def test_load_takes_the_best_validation_weights_and_sets_up_the_corpus(runs):
    _, best = fake_run(runs, "wp_lstm_2x64", "lstm")
    folder = runs / "char_rnn" / "wp_lstm_2x64" / "smoke" / "seed1" / "checkpoints"
    (folder / "epoch002.ckpt").write_bytes(b"cut short by a kill")  # unreadable: skipped
    trained = load("wp_lstm_2x64", "smoke", 1, runs)
    assert trained.checkpoint.name == "epoch001.ckpt"
    assert trained.weights == "best validation epoch"
    assert not trained.net.training
    for name, value in best.state_dict().items():
        assert torch.equal(trained.net.state_dict()[name], value)
    assert trained.cell == "lstm" and trained.net.hidden_size == 8 and len(trained.net.layers) == 2
    test = trained.data.parts["test"]
    assert test.dtype == np.uint8 and len(test) == 2000 and len(trained.data.vocab) == 87
    assert trained.config["model"]["init_args"]["hidden_size"] == 8
    assert trained.config["data"]["init_args"]["limit_chars"] == 20000
    ids, raw = head_of_test(trained, 50)
    assert ids.dtype == torch.int64 and bytes(raw) == trained.data.vocab.decode(test[:50])


@needs_wp
def test_load_without_validation_uses_the_final_weights_and_the_config_file(runs):
    final, _ = fake_run(runs, "wp_gru_2x64", "gru", best=False, data_hparams=False)
    trained = load("wp_gru_2x64", "smoke", 1, runs)
    assert trained.weights.startswith("final")
    for name, value in final.state_dict().items():
        assert torch.equal(trained.net.state_dict()[name], value)
    # data arguments from papers/char_rnn/configs/wp_gru_2x64-smoke.yaml
    assert trained.config["data"]["init_args"]["limit_chars"] == 20000


def test_missing_checkpoint_names_the_folder_and_the_command(runs):
    with pytest.raises(FileNotFoundError) as err:
        load("wp_gru_1x64", "cpu", 1, runs)
    message = str(err.value)
    assert str(runs / "char_rnn" / "wp_gru_1x64" / "cpu" / "seed1" / "checkpoints") in message
    assert "make reproduce PAPER=char_rnn EXPERIMENT=wp_gru_1x64" in message


# --------------------------------------------------------------------------------------------------
# cells
def test_line_position():
    assert cells.line_position(b"ab\ncd").tolist() == [1, 2, 0, 1, 2]
    assert cells.line_position(b"a\r\n\r\nb").tolist() == [1, 2, 0, 1, 0, 1]


def test_in_quote():
    assert cells.in_quote(b'a"bc"d').tolist() == [0, 1, 1, 1, 0, 0]
    # a blank line (CRLF CRLF) closes a quotation that English prose reopens in the next paragraph
    text = b'x"a\r\n\r\n"b"c'
    assert cells.in_quote(text).tolist() == [0, 1, 1, 1, 1, 1, 0, 1, 1, 0, 0]
    assert cells.in_quote(text, paragraph_reset=False).tolist() == [0, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1]
    # a single line break inside a quotation keeps it open
    assert cells.in_quote(b'"a\r\nb"c').tolist() == [1, 1, 1, 1, 1, 0, 0]


def test_bracket_depth():
    assert cells.bracket_depth(b"f(a[b]{c}))x(").tolist() == [0, 1, 1, 2, 2, 1, 2, 2, 1, 0, 0, 0, 1]


def test_a_planted_unit_is_found_first():
    rng = np.random.default_rng(0)
    feature = cells.line_position(b"the first line\nand a second, longer line\nthird\n" * 5)
    matrix = rng.normal(size=(len(feature), 20))
    matrix[:, 13] = 0.5 * feature - 3  # exactly the feature, rescaled
    matrix[:, 4] = -feature + rng.normal(scale=3.0, size=len(feature))  # anti-correlated, noisy
    matrix[:, 9] = 1.0  # constant: correlation 0, not NaN
    ranked = cells.rank_units(matrix, feature, 3)
    assert ranked[0][0] == 13 and ranked[0][1] == pytest.approx(1.0)
    assert ranked[1][0] == 4 and ranked[1][1] < -0.5
    r = cells.correlations(matrix, feature)
    assert r[9] == 0 and np.isfinite(r).all()
    assert r[13] == pytest.approx(np.corrcoef(matrix[:, 13], feature)[0, 1])


def test_lstm_activation_is_tanh_of_the_cell_state():
    net = module("lstm", 3, hidden=5).net
    trace = net.trace(torch.tensor([1, 2, 3, 4]))
    matrix, labels = cells.activations(trace, "lstm")
    assert matrix.shape == (4, 10) and labels[5] == (2, 0)
    assert np.allclose(matrix[:, 7], trace[1]["c"][:, 2].tanh().numpy())
    gru = module("gru", 3, hidden=5).net
    trace = gru.trace(torch.tensor([1, 2, 3]))
    assert np.allclose(cells.activations(trace, "gru")[0][:, :5], trace[0]["h"].numpy())


def strip_spans(block: str) -> str:
    return re.sub(r"</?span[^>]*>", "", block.removeprefix('<div class="text">').removesuffix("</div>"))


def test_coloured_text_escapes_and_colours_every_displayed_character():
    raw = "if (a < b && c > \"d\") {\r\n  x = 'é';\r\n}".encode()
    pieces = cells.display_pieces(raw)
    assert len(pieces) == len(raw)  # aligned with the bytes
    shown = [p for p in pieces if p is not None]
    assert "".join(shown) == raw.decode().replace("\r", "")
    values = np.linspace(-1, 1, len(raw))
    block = cells.coloured_text(pieces, values)
    assert block.count("<span ") == len(shown)
    assert strip_spans(block) == html.escape(raw.decode().replace("\r", ""))
    assert "&lt; b &amp;&amp; c &gt; &quot;d&quot;" in strip_spans(block)
    assert 'class="c0" title="-1.000"' in block and 'class="c40" title="+1.000"' in block
    assert cells.colour(-1) == "rgb(0,0,255)" and cells.colour(0) == "rgb(255,255,255)"
    assert cells.colour(1) == "rgb(255,0,0)"
    # a lone continuation byte shows the replacement character, still one piece per byte
    assert cells.display_pieces(b"\xa9a") == ["\ufffd", "a"]


@needs_wp
def test_cells_command_writes_the_page_and_the_correlations(runs, capsys):
    fake_run(runs, "wp_lstm_2x64", "lstm")
    out = runs.parent / "out"
    argv = ["wp_lstm_2x64", "--tier", "smoke", "--chars", "400", "--top", "2", "--cell", "2:7"]
    assert cells.main([*argv, "--runs", str(runs), "--out", str(out)]) == 0
    page = (out / "cells_wp_lstm_2x64_smoke.html").read_text()
    report = json.loads((out / "cells_wp_lstm_2x64_smoke.json").read_text())
    assert report["activation"] == "tanh(c)" and report["characters"] == 400
    assert set(report["features"]) == {"line_position", "in_quote", "bracket_depth"}
    trained = load("wp_lstm_2x64", "smoke", 1, runs)
    _, raw = head_of_test(trained, 400)
    displayed = [p for p in cells.display_pieces(raw) if p is not None]
    blocks = re.findall(r'<div class="text">.*?</div>', page, flags=re.S)
    assert blocks and '<h3 id="L2u7">' in page
    for block in blocks:
        assert block.count("<span ") == len(displayed)
        assert strip_spans(block) == html.escape("".join(displayed))
    for entry in report["features"].values():
        r = np.abs(np.concatenate(entry["r"]))
        assert len(r) == 16
        if not entry["constant"]:
            assert [abs(u["r"]) for u in entry["top"]] == pytest.approx(sorted(r)[::-1][:2], abs=1e-4)
            assert f'id="L{entry["top"][0]["layer"]}u{entry["top"][0]["unit"]}"' in page
    assert "<script" not in page
    assert cells.main([*argv[:-1], "3:0", "--runs", str(runs), "--out", str(out)]) == 2
    assert "not a unit of this model" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------
# saturation
def test_saturation_fractions_are_exact():
    values = np.array([[0.05, 0.5, 0.95], [0.2, 0.09, 0.91], [0.95, 0.5, 0.5], [0.1, 0.9, 0.0]])
    left, right = saturation.fractions(values)
    assert left.tolist() == [0.25, 0.25, 0.25]  # strictly below 0.1
    assert right.tolist() == [0.25, 0.0, 0.5]  # strictly above 0.9
    trace = [
        {gate: torch.tensor(values) for gate in "ifo"},
        {gate: torch.full((4, 3), 0.99) for gate in "ifo"},
    ]
    summary = saturation.saturation(trace, "lstm")
    assert list(summary) == ["i", "f", "o"]
    assert summary["f"][0]["mean_left"] == pytest.approx(0.25)
    assert summary["f"][0]["mean_right"] == pytest.approx(0.75 / 3)
    assert summary["o"][1] == {
        "layer": 2,
        "mean_left": 0.0,
        "mean_right": 1.0,
        "left": [0.0] * 3,
        "right": [1.0] * 3,
    }
    with pytest.raises(ValueError, match="no gates"):
        saturation.saturation([{"h": torch.zeros(4, 3)}], "rnn")


@needs_wp
def test_saturation_command(runs, capsys):
    fake_run(runs, "wp_gru_2x64", "gru")
    fake_run(runs, "wp_rnn_2x64", "rnn")
    out = runs.parent / "out"
    common = ["--tier", "smoke", "--chars", "300", "--runs", str(runs), "--out", str(out)]
    assert saturation.main(["wp_gru_2x64", *common]) == 0
    png = out / "saturation_wp_gru_2x64_smoke.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((out / "saturation_wp_gru_2x64_smoke.json").read_text())
    assert list(report["gates"]) == ["r", "z"] and [e["layer"] for e in report["gates"]["z"]] == [1, 2]
    for entry in report["gates"]["r"]:
        assert 0 <= entry["mean_left"] + entry["mean_right"] <= 1
    assert saturation.main(["wp_gru_2x64", "wp_rnn_2x64", *common]) == 2
    assert "no gates" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------
# sampling
def test_sampling_is_seeded_and_greedy_at_a_tiny_temperature():
    net = module("lstm", 4, hidden=16).net.eval()
    prime = np.array([5, 6, 7])

    def draw(seed, temperature=1.0, length=60):
        return sample.generate(net, prime, length, temperature, torch.Generator().manual_seed(seed))

    assert draw(1).tolist() == draw(1).tolist()
    assert draw(1).tolist() != draw(2).tolist()
    with pytest.raises(ValueError, match="> 0"):
        draw(1, temperature=0.0)
    greedy = []
    with torch.no_grad():
        logits, state = net(torch.tensor(prime)[None], net.zero_state(1))
        for _ in range(30):
            greedy.append(int(logits[0, -1].argmax()))
            logits, state = net(torch.tensor([[greedy[-1]]]), state)
    assert draw(1, 1e-6, 30).tolist() == greedy
    assert draw(2, 1e-6, 30).tolist() == greedy


@needs_wp
def test_sample_command(runs, capsys):
    fake_run(runs, "wp_lstm_2x64", "lstm")
    argv = ["-e", "wp_lstm_2x64", "--tier", "smoke", "--runs", str(runs), "--length", "40", "--prime", "The"]
    assert sample.main([*argv, "--sample-seed", "3"]) == 0
    first = capsys.readouterr().out
    assert sample.main([*argv, "--sample-seed", "3"]) == 0
    assert capsys.readouterr().out == first and first.startswith("The")
    assert sample.main([*argv, "--temperature", "0"]) == 2
    assert "--temperature must be > 0" in capsys.readouterr().err
    assert sample.main([*argv[:-1], "The \u20ac"]) == 2  # the euro sign's bytes are not in War and Peace
    assert "not in the corpus's vocabulary" in capsys.readouterr().err


def test_repro_sample_delegates_to_the_paper(monkeypatch, capsys):
    buffer = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=buffer, width=3000, color_system=None))
    with pytest.raises(SystemExit) as exit_:
        cli.main(["sample", "char_rnn", "--help"])
    assert exit_.value.code == 0
    assert "--temperature" in capsys.readouterr().out
    assert cli.main(["sample", "stack_rnn"]) == 2
    assert "stack_rnn has no sampler" in buffer.getvalue()
