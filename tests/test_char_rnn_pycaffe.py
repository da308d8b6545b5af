"""pycaffe-recurrent @ e280272 (spec §3.4), the fidelity details of lk_pycaffe_lstm, each checked against a
reference written here from what the original does (recurrent.ipynb: ``lstm_step``, ``get_net_param`` and
"Load Data"; train.py), not from papers/char_rnn:

- the parameter count of the notebook's net on the 124-symbol corpus: 358,524;
- the wiring: each layer's blob is [c, h], read whole by the layer above and by the readout;
- dropout from layer 2 acts on that blob, which is also the state the next step reads;
- the split: the text is cut into the batch's streams first and each stream split by window index.
"""

from __future__ import annotations

import gzip
import hashlib

import numpy as np
import pytest
import torch

from papers.char_rnn import data as char_data
from papers.char_rnn.data import Corpus, StreamSplitCharData, stream_split
from papers.char_rnn.grid import FOLDER
from papers.char_rnn.model import CharRNN, CharRNNModule, parameter_count
from repro import config as config_lib

pytestmark = pytest.mark.usefixtures("one_thread")

K = 124  # distinct bytes of the Linux substitute
CONFIGS = FOLDER / "configs"


def caffe_step(s, below, weight, bias, hidden):
    """The notebook's lstm_step: slice the state blob into c, h; InnerProduct over Concat(below, h); slice
    i, f, o, g; return Concat(c, h)."""
    c, h = s[:, :hidden], s[:, hidden:]
    z = torch.cat([below, h], dim=1) @ weight.T + bias
    i, f, o, g = z.split(hidden, dim=1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c)
    return torch.cat([c, h], dim=1)


def caffe_net(net, x, masks=None):
    """get_net_param's unrolled graph over one-hot ``x`` (B × T) from zero blobs: layer 0 reads x, layer l
    the blob of layer l - 1, the readout the top blob; ``masks[l][t]`` (scaled) multiplies the blob of layer
    l >= 1 at step t, and that blob is h_{t+1, l}, the next step's state."""
    hidden = net.hidden_size
    onehot = torch.nn.functional.one_hot(x, K).float()
    blobs = [torch.zeros(x.shape[0], 2 * hidden) for _ in net.layers]
    logits = []
    for t in range(x.shape[1]):
        below = onehot[:, t]
        for number, layer in enumerate(net.layers):
            blobs[number] = caffe_step(blobs[number], below, layer.weight, layer.bias, hidden)
            if masks is not None and number >= 1:
                blobs[number] = blobs[number] * masks[number][t]
            below = blobs[number]
        logits.append(net.decoder(below))
    return torch.stack(logits, dim=1), blobs


def test_parameter_count_is_the_notebooks_358524():
    """hypes: state_dim 256 ([c, h]: 128 units), 2 layers; fc_0: (124 + 128) -> 512, fc_1: (256 + 128) ->
    512, readout fc_2: 256 -> 124, one bias each: 129,536 + 197,120 + 31,868."""
    for tier in ("smoke", "cpu", "full"):
        assert (
            config_lib.load(CONFIGS / f"lk_pycaffe_lstm-{tier}.yaml")["model"]["init_args"]["cell"]
            == "lstm_ch"
        )
    model, _ = config_lib.instantiate(config_lib.load(CONFIGS / "lk_pycaffe_lstm-full.yaml"))
    shapes = {name: tuple(p.shape) for name, p in model.net.named_parameters() if p.requires_grad}
    assert shapes == {
        "layers.0.weight": (512, K + 128),
        "layers.0.bias": (512,),
        "layers.1.weight": (512, 256 + 128),
        "layers.1.bias": (512,),
        "decoder.weight": (K, 256),
        "decoder.bias": (K,),
    }
    assert sum(p.numel() for p in model.net.parameters() if p.requires_grad) == 358_524
    assert parameter_count("lstm_ch", 128, 2, K) == 358_524
    assert all(p.requires_grad for p in model.net.parameters())


def test_upper_layer_and_readout_read_the_c_h_concatenation():
    torch.manual_seed(0)
    net = CharRNN(K, "lstm_ch", 16, 3, init="pycaffe").eval()
    for p in net.parameters():  # larger than U(±0.01), so that c and h differ clearly
        torch.nn.init.uniform_(p, -0.5, 0.5)
    x = torch.randint(0, K, (3, 12))
    logits, state = net(x, net.zero_state(3))
    reference, blobs = caffe_net(net, x)
    assert torch.allclose(logits, reference, atol=1e-5)
    assert all(torch.allclose(s, b, atol=1e-5) for s, b in zip(state, blobs, strict=True))
    # The c half of the top blob reaches the readout: without its columns the logits change.
    with torch.no_grad():
        net.decoder.weight[:, :16] = 0
    assert not torch.allclose(net(x, net.zero_state(3))[0], logits, atol=1e-3)
    # And the trace the analyses read follows the same wiring.
    trace = net.trace(x[0])
    with torch.no_grad():
        net.decoder.weight.copy_(torch.nn.init.uniform_(torch.empty_like(net.decoder.weight), -0.5, 0.5))
        top = torch.cat([trace[-1]["c"], trace[-1]["h"]], dim=1)
        assert torch.allclose(net.decoder(top), net(x[:1], net.zero_state(1))[0][0], atol=1e-5)


def test_dropout_from_layer_two_acts_on_the_carried_state():
    """Caffe's Dropout follows every layer l >= 1 (train net only) and its output is the blob h_{t+1, l}
    that copy_state and the next step read: the carried c and h are dropped, layer 0 never."""
    torch.manual_seed(0)
    net = CharRNN(K, "lstm_ch", 16, 2, dropout=0.5, dropout_from_layer=2, init="pycaffe").train()
    for p in net.parameters():
        torch.nn.init.uniform_(p, -0.5, 0.5)
    x = torch.randint(0, K, (4, 10))
    net.reseed_dropout(3)
    logits, state = net(x, net.zero_state(4))
    net.reseed_dropout(3)  # the same draw: the mask of layer 2 (layer 1 draws none)
    mask = net.dropout_mask((4, 10, 32), 2)
    reference, blobs = caffe_net(net, x, masks={1: mask.unbind(1)})
    assert torch.allclose(logits, reference, atol=1e-5)
    assert (state[0] != 0).all()  # layer 1: no dropout
    dropped = state[1] == 0
    assert torch.equal(dropped, mask[:, -1] == 0) and 0.25 < dropped.float().mean() < 0.75
    assert set(mask.unique().tolist()) == {0.0, 2.0}  # Caffe scales the kept units by 1 / (1 - 0.5)
    # Dropping only what goes up (the suite's other cells) would be another network.
    outputs_only, _ = caffe_net(net, x)
    net.eval()
    assert not torch.allclose(logits, outputs_only, atol=1e-3)
    assert torch.allclose(net(x, net.zero_state(4))[0], outputs_only, atol=1e-5)  # test net: no dropout


def notebook_split(ids, b, T):
    """recurrent.ipynb's Load Data, written from what it does: X = text[:-1], Y = text[1:]; chop into b rows
    of m = len // b; transpose to m × b; chop into n = m // T blocks of T rows: n × T × b; the first
    9 * n / 10 blocks (Python 2 integers) train, the rest test."""
    X, Y = ids[:-1], ids[1:]

    def chop(a, n=None, m=None):
        if n:
            m = len(a) // n
        if m:
            n = len(a) // m
        return np.array(np.split(np.array(a[: m * n]), n))

    def rshape(a):
        return chop(np.rollaxis(chop(a, n=b), 1, 0), m=T)

    X, Y = rshape(X), rshape(Y)
    a = 9 * len(X) // 10
    return {"train": (X[:a], Y[:a]), "test": (X[a:], Y[a:])}


@pytest.mark.parametrize("length, b, T", [(1001, 4, 7), (5000, 8, 10), (64, 3, 2)])
def test_split_is_the_tail_of_every_stream_not_of_the_file(length, b, T):
    ids = np.random.default_rng(length).integers(0, 50, length).astype(np.uint8)
    ours = stream_split(ids, b, T, (0.9, 0.0, 0.1))
    theirs = notebook_split(ids, b, T)
    for part in ("train", "test"):
        for mine, blocks in zip(ours[part], theirs[part], strict=True):
            windows = [mine[:, j * T : (j + 1) * T] for j in range(mine.shape[1] // T)]
            assert len(windows) == len(blocks), part
            for window, block in zip(windows, blocks, strict=True):
                assert np.array_equal(window, block.T), part  # block: T × b, window: b streams × T
    assert ours["val"][0].shape == (b, 0)
    # The held-out text is each stream's tail: stream 0's test text lies in the first quarter of the file
    # when there are 4 or more streams, not in the file's last 10%.
    m = (length - 1) // b
    test = ours["test"][0]
    assert np.array_equal(test[0], ids[:m][m // T * T - test.shape[1] : m // T * T])


def test_datamodule_reads_each_streams_tail_as_parallel_test_streams(tmp_path, monkeypatch):
    """A 2,001-byte synthetic corpus: 4 streams of m = 500, n = 50 windows of 10, 45 train, 5 test; the
    test loader reads the 4 tails (50 characters each) in parallel, each character predicted once."""
    text = bytes(np.random.default_rng(0).integers(97, 123, 2001).astype(np.uint8))
    gz = tmp_path / "linux_kernel" / "linux_kernel_corpus.txt.gz"
    gz.parent.mkdir()
    gz.write_bytes(gzip.compress(text))
    fake = Corpus("linux_kernel", gz.name, hashlib.sha256(gz.read_bytes()).hexdigest(), None)
    monkeypatch.setitem(char_data.CORPORA, "linux_kernel", fake)
    monkeypatch.setenv("REPRO_DATA", str(tmp_path))
    data = StreamSplitCharData(batch_size=4, unroll=10, eval_chunk=20, window_repeats=(1,))
    data.setup()
    ids = data.vocab.encode(np.frombuffer(text, dtype=np.uint8))
    batches = list(data.test_dataloader())
    inputs = torch.cat([b["inputs"] for b in batches], dim=1)
    targets = torch.cat([b["targets"] for b in batches], dim=1)
    assert inputs.shape == (4, 50) and [b["inputs"].shape[1] for b in batches] == [20, 20, 10]
    for s in range(4):
        assert inputs[s].tolist() == ids[s * 500 + 450 : s * 500 + 500].tolist()
        assert targets[s].tolist() == ids[s * 500 + 451 : s * 500 + 501].tolist()
    train = torch.cat([b["inputs"] for b in data.train_dataloader()], dim=1)
    assert train.shape == (4, 450) and train[1].tolist() == ids[500:950].tolist()
    assert len(data.parts["test"]) == 200 and data.parts["test"][:50].tolist() == ids[450:500].tolist()


def test_mean_loss_with_clip_decay_and_delta_over_t_takes_caffes_steps():
    """Caffe minimises the sum of the T per-step SoftmaxWithLoss (each a batch mean): ClipGradients (global
    L2 norm), then L2 weight decay (decay_mult 0 on biases), then RMSProp (delta after the root), lr_mult 2 on
    biases. The module's mean loss with clip / T, weight decay / T and delta / T (grid.pycaffe_config) must
    take the same steps; the clip is set low so that it acts."""
    T, clip, decay, delta = 6, 0.05, 0.01, 1e-8
    torch.manual_seed(0)
    module = CharRNNModule(
        vocab_size=K,
        cell="lstm_ch",
        hidden_size=8,
        layers=2,
        init="pycaffe",
        lr=5e-3,
        rms_alpha=0.8,
        rms_eps=delta / T,
        weight_decay=decay / T,
        bias_lr_mult=2.0,
    )
    caffe = {n: p.detach().clone() for n, p in module.net.named_parameters()}
    history = {n: torch.zeros_like(p) for n, p in caffe.items()}
    optimizer = module.configure_optimizers()
    x = torch.randint(0, K, (3, T + 1))
    for _ in range(3):
        module.state = None
        nll, _ = module.nats({"inputs": x[:, :T], "targets": x[:, 1:]})
        optimizer.zero_grad()
        (nll / x[:, 1:].numel()).backward()
        torch.nn.utils.clip_grad_norm_(module.net.parameters(), clip / T)  # Lightning's "norm" clipping
        optimizer.step()
        # Caffe, by hand, on its own copy of the weights.
        net = CharRNN(K, "lstm_ch", 8, 2, init="pycaffe")
        with torch.no_grad():
            for n, p in net.named_parameters():
                p.copy_(caffe[n])
        logits, _ = net(x[:, :T], net.zero_state(3))
        loss = sum(torch.nn.functional.cross_entropy(logits[:, t], x[:, t + 1]) for t in range(T))
        grads = dict(zip(caffe, torch.autograd.grad(loss, list(net.parameters())), strict=True))
        norm = torch.sqrt(sum((g**2).sum() for g in grads.values()))
        assert norm > clip  # the clip acts
        for n, g in grads.items():
            g = g * (clip / norm)
            bias = "bias" in n
            g = g if bias else g + decay * caffe[n]
            history[n] = 0.8 * history[n] + 0.2 * g**2
            caffe[n] = caffe[n] - 5e-3 * (2.0 if bias else 1.0) * g / (history[n].sqrt() + delta)
    for n, p in module.net.named_parameters():
        assert torch.allclose(p, caffe[n], atol=1e-6, rtol=1e-4), n
    # The committed configs hold Caffe's clip 100, weight decay 1e-4 and delta 1e-8 over their T.
    for tier in ("smoke", "cpu", "full"):
        config = config_lib.load(CONFIGS / f"lk_pycaffe_lstm-{tier}.yaml")
        steps, hp = config["data"]["init_args"]["unroll"], config["model"]["init_args"]
        assert config["trainer"]["gradient_clip_val"] == pytest.approx(100 / steps)
        assert config["trainer"]["gradient_clip_algorithm"] == "norm"
        assert hp["weight_decay"] == pytest.approx(1e-4 / steps) and hp["rms_eps"] == pytest.approx(
            1e-8 / steps
        )
