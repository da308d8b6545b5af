"""The configurable LSTM layer (repro/lstm.py): torch.nn.LSTM parity, the golden vector of
specs/lstm_cell_reference.md §7, each variant's defining property, and the hand-written backward against
autograd through a step-by-step reference written from the equations (specs/lstm_odyssey.md §3,
specs/depth_gated_lstm.md §3.2)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.func import functional_call

from repro.lstm import LSTM, VARIANTS, LSTMLayer, LSTMVariant, copy_from_torch, variant


@pytest.fixture(autouse=True)
def float64():
    """Every test here runs in float64: the tolerances are float64's."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def reference(layer: LSTMLayer, x, state=None, lower_cells=None):
    """The layer's equations step by step with autograd: an oracle independent of the fused scan."""
    cfg, n = layer.config, layer.hidden_size
    steps, batch = x.shape[:2]
    y = torch.zeros(batch, n) if state is None else state[0]
    c = torch.zeros(batch, n) if state is None else state[1]
    inputs = x * layer.stabiliser.exp() if layer.stabiliser is not None else x
    blocks = dict(zip(layer.gates + (["d"] if cfg.depth_gate else []), range(10), strict=False))
    w = layer.weight_x.split(n)
    r = layer.weight_r.split(n)
    b = layer.bias.split(n)

    def peep(gate, cell):
        p = layer.peephole.get(gate)
        if p is None:
            return 0.0
        return p * cell if p.dim() == 1 else cell @ p.T

    def pre(gate, t, y, prev_gates):
        k = blocks[gate]
        value = inputs[t] @ w[k].T + b[k]
        if gate != "d":
            value = value + y @ r[k].T
        if layer.weight_gates is not None and gate in "ifo":
            rows = layer.weight_gates.split(n)["ifo".index(gate)].split(n, dim=1)
            value = value + sum(prev_gates[g] @ rows[j].T for j, g in enumerate("ifo"))
        return value

    prev_gates = {g: torch.zeros(batch, n) for g in "ifo"}
    ys, cs = [], []
    for t in range(steps):
        z = pre("z", t, y, prev_gates)
        z = torch.tanh(z) if cfg.input_act == "tanh" else z
        i = (
            torch.sigmoid(pre("i", t, y, prev_gates) + peep("i", c))
            if cfg.input_gate
            else torch.ones(batch, n)
        )
        if cfg.forget_gate == "on":
            f = torch.sigmoid(pre("f", t, y, prev_gates) + peep("f", c))
        elif cfg.forget_gate == "coupled":
            f = 1 - i
        else:
            f = torch.ones(batch, n)
        c_new = f * c + i * z
        if cfg.depth_gate:
            low = lower_cells[t] if layer.lower else x[t] @ layer.weight_lower.T
            d_pre = (
                pre("d", t, y, prev_gates) + peep("d", c) + (layer.depth_lower * low if layer.lower else 0.0)
            )
            c_new = c_new + torch.sigmoid(d_pre) * low
        o = (
            torch.sigmoid(pre("o", t, y, prev_gates) + peep("o", c_new))
            if cfg.output_gate
            else torch.ones(batch, n)
        )
        y = o * (torch.tanh(c_new) if cfg.output_act == "tanh" else c_new)
        prev_gates = {"i": i, "f": f, "o": o}
        c = c_new
        ys.append(y)
        cs.append(c)
    return torch.stack(ys), torch.stack(cs)


def grads(layer, outputs, extra=()):
    torch.manual_seed(7)
    weights = [torch.randn_like(o) for o in outputs]
    loss = sum((o * w).sum() for o, w in zip(outputs, weights, strict=True))
    params = [p for p in layer.parameters()] + list(extra)
    return torch.autograd.grad(loss, params, allow_unused=True)


# --------------------------------------------------------------------------------------------------
# torch.nn.LSTM and the golden vector


def test_golden_vector_of_the_cell_reference():
    """lstm_cell_reference.md §7: H = I = 1, x = (1, -1, 0.5); catches gate-order bugs."""
    ref = nn.LSTM(1, 1)
    with torch.no_grad():
        ref.weight_ih_l0.copy_(torch.tensor([[0.1], [0.2], [0.3], [0.4]]))
        ref.weight_hh_l0.copy_(torch.tensor([[0.5], [0.6], [0.7], [0.8]]))
        ref.bias_ih_l0.copy_(torch.tensor([0.0, 1.0, 0.0, 0.0]))
        ref.bias_hh_l0.zero_()
    layer = LSTMLayer(1, 1, "standard")
    copy_from_torch(layer, ref.weight_ih_l0, ref.weight_hh_l0, ref.bias_ih_l0, ref.bias_hh_l0)
    y, c, _ = layer(torch.tensor([1.0, -1.0, 0.5]).view(3, 1, 1))
    assert c.flatten().tolist() == pytest.approx([0.1529330586, -0.0055977016, 0.0712390427], abs=1e-9)
    assert y.flatten().tolist() == pytest.approx([0.0908519395, -0.0023448148, 0.0390704960], abs=1e-9)


@pytest.mark.parametrize("layers", [1, 2])
def test_standard_configuration_is_torch_lstm_forward_and_gradients(layers):
    """lstm_cell_reference.md §8.2-3: batch 3, length 7, I = 5, H = 4, float64, to 1e-12."""
    torch.manual_seed(0)
    ref = nn.LSTM(5, 4, num_layers=layers)
    ours = LSTM(5, 4, num_layers=layers, config="standard")
    for k, layer in enumerate(ours.layers):
        names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        copy_from_torch(layer, *(getattr(ref, f"{name}_l{k}") for name in names))
    x = torch.randn(7, 3, 5, requires_grad=True)
    h0, c0 = torch.randn(layers, 3, 4), torch.randn(layers, 3, 4)
    out_ref, (h_ref, c_ref) = ref(x, (h0, c0))
    out, finals = ours(x, [(h0[k], c0[k]) for k in range(layers)])
    torch.testing.assert_close(out, out_ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(torch.stack([c for _, c in finals]), c_ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(torch.stack([h for h, _ in finals]), h_ref, rtol=0, atol=1e-12)
    g = torch.randn_like(out)
    (dx_ref,) = torch.autograd.grad((out_ref * g).sum(), [x], retain_graph=True)
    (dx,) = torch.autograd.grad((out * g).sum(), [x], retain_graph=True)
    torch.testing.assert_close(dx, dx_ref, rtol=0, atol=1e-12)
    # Weight gradients, mapped back to torch's layout (i, f, g, o; one bias is the sum of both).
    (ref_dw,) = torch.autograd.grad((out_ref * g).sum(), [ref.weight_hh_l0])
    (our_dw,) = torch.autograd.grad((out * g).sum(), [ours.layers[0].weight_r])
    z, i, f, o = our_dw.chunk(4)
    torch.testing.assert_close(torch.cat([i, f, z, o]), ref_dw, rtol=0, atol=1e-12)


def test_copy_from_torch_refuses_a_layer_without_all_four_gates():
    with pytest.raises(ValueError, match="all four gates"):
        copy_from_torch(LSTMLayer(2, 2, "NIG"), *[torch.zeros(8, 2)] * 2, *[torch.zeros(8)] * 2)


# --------------------------------------------------------------------------------------------------
# The hand-written backward and every variant


def layer_and_input(name, lower=False, seed=0, size=(5, 3, 3, 4)):
    torch.manual_seed(seed)
    steps, batch, inputs, hidden = size
    layer = LSTMLayer(inputs, hidden, name, lower=lower)
    layer.reset_parameters(0.5)
    if layer.stabiliser is not None:
        with torch.no_grad():
            layer.stabiliser.fill_(0.3)
    x = torch.randn(steps, batch, inputs)
    lower_cells = torch.randn(steps, batch, hidden) if lower else None
    state = (torch.randn(batch, hidden), torch.randn(batch, hidden))
    return layer, x, state, lower_cells


CASES = [(name, False) for name in VARIANTS] + [("dglstm", True)]


@pytest.mark.parametrize(("name", "lower"), CASES)
def test_scan_matches_the_step_by_step_equations_forward_and_backward(name, lower):
    layer, x, state, lower_cells = layer_and_input(name, lower)
    extra = [x, *state] + ([lower_cells] if lower else [])
    for tensor in extra:
        tensor.requires_grad_(True)
    y, c, _ = layer(x, state, lower_cells)
    y_ref, c_ref = reference(layer, x, state, lower_cells)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(c, c_ref, rtol=0, atol=1e-12)
    for ours, theirs in zip(grads(layer, (y, c), extra), grads(layer, (y_ref, c_ref), extra), strict=True):
        assert (ours is None) == (theirs is None)
        if ours is not None:
            torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-10)


@pytest.mark.parametrize(
    ("name", "lower"), [("vanilla", False), ("FGR", False), ("dglstm", True), ("NOAF", False)]
)
def test_gradcheck(name, lower):
    layer, x, state, lower_cells = layer_and_input(name, lower, size=(3, 2, 2, 3))
    inputs = [x, *state] + ([lower_cells] if lower else [])
    for tensor in inputs:
        tensor.requires_grad_(True)

    def run(x, y0, c0, *rest):
        y, c, _ = layer(x, (y0, c0), rest[0] if rest else None)
        return y, c

    assert torch.autograd.gradcheck(run, inputs)
    # The parameters, as explicit inputs of a functional call of the layer.
    names = [n for n, _ in layer.named_parameters()]
    fixed = (
        inputs[0].detach(),
        tuple(t.detach() for t in inputs[1:3]),
        lower_cells.detach() if lower else None,
    )

    def by_parameters(*values):
        return functional_call(layer, dict(zip(names, values, strict=True)), fixed)[:2]

    values = [p.detach().clone().requires_grad_(True) for p in layer.parameters()]
    assert torch.autograd.gradcheck(by_parameters, values)


# --------------------------------------------------------------------------------------------------
# Each variant's defining property (lstm_odyssey.md §3 table; depth_gated_lstm.md §3.2)


def trace(name, **kw):
    layer, x, state, lower_cells = layer_and_input(name, **kw)
    return layer, layer.trace(x, state, lower_cells), state


def previous_cells(values, state):
    return torch.cat([state[1].unsqueeze(0), values["c"][:-1]])


def test_nig_has_no_input_gate():
    layer, v, state = trace("NIG")
    assert "i" not in v and layer.gates == ["z", "f", "o"]
    torch.testing.assert_close(v["c"], v["f"] * previous_cells(v, state) + v["z"])


def test_nfg_adds_to_the_cell_without_forgetting():
    layer, v, state = trace("NFG")
    assert "f" not in v and layer.gates == ["z", "i", "o"]
    torch.testing.assert_close(v["c"] - previous_cells(v, state), v["i"] * v["z"])


def test_nog_outputs_the_squashed_cell():
    _, v, _ = trace("NOG")
    assert "o" not in v
    torch.testing.assert_close(v["y"], torch.tanh(v["c"]))


def test_niaf_block_input_is_linear_and_noaf_output_is_unsquashed():
    layer, v, _ = trace("NIAF")
    assert v["z"].abs().max() > 1  # a tanh could not give this
    _, v, _ = trace("NOAF")
    torch.testing.assert_close(v["y"], v["o"] * v["c"])


def test_np_is_vanilla_without_its_peepholes():
    """Behaviour, not definitions: vanilla with the same weights and its peepholes at zero computes exactly
    what NP computes, and with peepholes it does not (so NP really drops the cell-to-gate connections)."""
    np_layer, x, state, _ = layer_and_input("NP")
    assert len(np_layer.peephole) == 0
    vanilla = LSTMLayer(np_layer.input_size, np_layer.hidden_size, "vanilla")
    loaded = vanilla.load_state_dict(np_layer.state_dict(), strict=False)
    assert loaded.missing_keys and all(key.startswith("peephole.") for key in loaded.missing_keys)
    assert not loaded.unexpected_keys
    with torch.no_grad():
        for peephole in vanilla.peephole.values():
            peephole.zero_()
    torch.testing.assert_close(vanilla(x, state)[0], np_layer(x, state)[0], rtol=0, atol=0)
    with torch.no_grad():
        vanilla.peephole["o"].fill_(0.5)
    assert not torch.allclose(vanilla(x, state)[0], np_layer(x, state)[0])


def test_cifg_couples_forget_to_input():
    layer, v, _ = trace("CIFG")
    assert layer.gates == ["z", "i", "o"] and "f" not in layer.peephole
    torch.testing.assert_close(v["f"], 1 - v["i"])


def test_fgr_with_zero_gate_recurrence_is_vanilla_and_otherwise_not():
    layer, x, state, _ = layer_and_input("FGR")
    assert layer.weight_gates.shape == (3 * layer.hidden_size, 3 * layer.hidden_size)  # nine N×N matrices
    vanilla = LSTMLayer(layer.input_size, layer.hidden_size, "vanilla")
    vanilla.load_state_dict({k: v for k, v in layer.state_dict().items() if k != "weight_gates"})
    assert not torch.allclose(layer(x, state)[0], vanilla(x, state)[0])
    with torch.no_grad():
        layer.weight_gates.zero_()
    torch.testing.assert_close(layer(x, state)[0], vanilla(x, state)[0], rtol=0, atol=1e-15)


def test_fgr_carries_its_gate_history_in_the_state():
    """A sequence run in two calls, the second starting from the first's final state (y, c, gates), equals
    one call over the whole sequence, values and gradients: truncated BPTT over an FGR layer sees the same
    network as full BPTT (a history reset to zero at each call differs at the second call's first step)."""
    layer, x, state, _ = layer_and_input("FGR", size=(6, 2, 3, 4))
    x.requires_grad_(True)
    y_whole, c_whole, final_whole = layer(x, state)
    y_first, c_first, carried = layer(x[:2], state)
    assert len(carried) == 3 and carried[2].shape == (2, 3 * 4)
    y_rest, c_rest, final_rest = layer(x[2:], carried)
    split = (torch.cat([y_first, y_rest]), torch.cat([c_first, c_rest]))
    torch.testing.assert_close(split[0], y_whole, rtol=0, atol=1e-12)
    torch.testing.assert_close(split[1], c_whole, rtol=0, atol=1e-12)
    for ours, theirs in zip(final_rest, final_whole, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)
    for ours, theirs in zip(
        grads(layer, (*split, final_rest[2]), [x]),
        grads(layer, (y_whole, c_whole, final_whole[2]), [x]),
        strict=True,
    ):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-10)
    # The second call without the gates starts them at zero, and so computes something else.
    assert not torch.allclose(layer(x[2:], carried[:2])[0], y_rest)


def test_fgr_gradcheck_through_the_carried_gates():
    layer, x, state, _ = layer_and_input("FGR", size=(3, 2, 2, 3))
    gates0 = torch.rand(2, 9)
    inputs = [x, *state, gates0]
    for tensor in inputs:
        tensor.requires_grad_(True)

    def run(x, y0, c0, g0):
        y, c, final = layer(x, (y0, c0, g0))
        return y, c, final[2]

    assert torch.autograd.gradcheck(run, inputs)


def test_a_state_of_the_wrong_length_is_refused():
    layer, x, state, _ = layer_and_input("vanilla")
    with pytest.raises(ValueError, match=r"a state is \(y, c\); got 3"):
        layer(x, (*state, state[0]))


def test_depth_gate_adds_the_gated_lower_cell():
    layer, x, state, lower_cells = layer_and_input("dglstm", lower=True)
    v = layer.trace(x, state, lower_cells)
    c_prev = previous_cells(v, state)
    torch.testing.assert_close(v["c"], (1 - v["i"]) * c_prev + v["i"] * v["z"] + v["d"] * lower_cells)
    assert layer.peephole["i"].shape == (4, 4) and layer.peephole["d"].shape == (4,)  # full; w_qd a vector


def test_depth_gate_shut_is_the_coupled_full_peephole_lstm():
    """With the depth gate's bias at -inf the layer is the code's baseline LSTM (coupled, full peepholes)."""
    layer, x, state, lower_cells = layer_and_input("dglstm", lower=True)
    with torch.no_grad():
        layer.bias[-layer.hidden_size :] = -torch.inf
    baseline = LSTMLayer(
        layer.input_size,
        layer.hidden_size,
        LSTMVariant(forget_gate="coupled", peepholes="full", stabiliser=True),
    )
    baseline.load_state_dict(
        {
            k: v[: -layer.hidden_size] if k in ("weight_x", "bias") else v
            for k, v in layer.state_dict().items()
            if k not in ("peephole.d", "depth_lower")
        }
    )
    torch.testing.assert_close(layer(x, state, lower_cells)[0], baseline(x, state)[0], rtol=0, atol=1e-15)


def test_first_depth_gated_layer_projects_its_raw_input_and_the_stack_feeds_cells_upwards():
    torch.manual_seed(0)
    stack = LSTM(3, 4, num_layers=2, config="dglstm")
    first, second = stack.layers
    assert first.weight_lower.shape == (4, 3) and first.depth_lower is None
    assert second.weight_lower is None and second.depth_lower.shape == (4,)
    x = torch.randn(5, 2, 3)
    y1, c1, _ = first(x)
    y2, _, _ = second(y1, lower_cells=c1)
    torch.testing.assert_close(stack(x)[0], y2, rtol=0, atol=0)


def test_stabiliser_scales_the_gates_input_by_exp_s_but_not_the_lower_projection():
    layer, x, state, _ = layer_and_input("dglstm")
    doubled = LSTMLayer(layer.input_size, layer.hidden_size, "dglstm")
    doubled.load_state_dict(layer.state_dict())
    with torch.no_grad():
        layer.stabiliser.fill_(torch.log(torch.tensor(2.0)))
        doubled.stabiliser.fill_(0.0)
        doubled.weight_x.mul_(2.0)
    torch.testing.assert_close(layer(x, state)[0], doubled(x, state)[0], rtol=0, atol=1e-14)


def test_unknown_variant_and_inconsistent_switches_are_named():
    with pytest.raises(ValueError, match="unknown LSTM variant 'NXG'. Valid: vanilla, NIG"):
        variant("NXG")
    with pytest.raises(ValueError, match="peepholes must be one of none, diagonal, full"):
        LSTMVariant(peepholes="square")
    with pytest.raises(ValueError, match="needs the input gate"):
        LSTMVariant(input_gate=False, forget_gate="coupled")
    with pytest.raises(ValueError, match="lower_cells is needed by, and only by"):
        LSTMLayer(3, 4, "dglstm", lower=True)(torch.randn(2, 1, 3))


def test_bench_quick_times_the_layer_and_nn_lstm_side_by_side(tmp_path, monkeypatch):
    from repro import cli

    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # the bench's one thread stays in the bench
    assert cli.main(["--results", str(tmp_path), "bench", "lstm", "--quick"]) == 0
    report = json.loads((tmp_path / "bench" / "lstm.json").read_text())
    (row,) = report["against_nn_lstm"]
    assert row["batch"] == 32 and set(row["seconds"]) == {"torch.nn.LSTM", "vanilla", "standard"}
    assert row["vanilla_vs_nn_lstm"] == pytest.approx(
        row["seconds"]["torch.nn.LSTM"] / row["seconds"]["vanilla"], rel=0.01
    )
    assert report["variants_batch32"]["vanilla"]["slowdown_vs_vanilla"] == 1.0
    assert set(report["variants_batch32"]) == {"vanilla", "CIFG"}
