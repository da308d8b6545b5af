"""Tests for papers/stack_rnn/model.py and data.py against /work/shared/specs/stack_rnn.md.

§3 model equations, §2.4 protocol (curriculum, validation, LR rule), and the harness (run_seed, resume, DDP).
Hand-set weights are in float64 so that values can be checked exactly.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from papers.stack_rnn import kernel
from papers.stack_rnn.data import StackTaskData
from papers.stack_rnn.model import LSTMBaseline, StackRNN, StackRNNModule
from papers.stack_rnn.tasks import get_task, test_stream
from repro import results
from repro import train as repro_train
from repro.train import RunSpec, latest_checkpoint, run_seed

REPO = Path(__file__).resolve().parent.parent
EXACT = {"rtol": 1e-12, "atol": 1e-12}


def f64(values):
    return torch.tensor(values, dtype=torch.float64)


pytestmark = pytest.mark.usefixtures("one_thread")


# -----------------------------------------------------------------------------
# Helpers


def tiny_core(
    vocab=2, hidden=3, stacks=2, size=4, depth=2, noop=False, recurrent=False, seed=0, use_kernel=True
):
    torch.manual_seed(seed)
    return StackRNN(vocab, hidden, stacks, size, depth, noop, recurrent, use_kernel).double()


def saturate(core, actions, push_pre, logits=None):
    """Hand-set weights that make h_t = 1 exactly (pre-activation 60 is clipped to 50, σ(50) == 1.0 in
    float64), so that the readout gives exactly the chosen pre-activations: per stack the action scores
    ``actions[s]`` and the push pre-activation ``push_pre[s]``. P = 0, so the stacks do not move h."""
    v, s, a, h = core.vocab_size, core.n_stacks, core.n_actions, core.hidden_size
    with torch.no_grad():
        core.embed.fill_(60.0)
        core.stack_to_hidden.zero_()
        core.readout.zero_()
        if logits is not None:
            core.readout[:, :v] = torch.tensor(logits, dtype=torch.float64) / h
        for k in range(s):
            core.readout[:, v + k * a : v + (k + 1) * a] = torch.tensor(actions[k], dtype=torch.float64) / h
            core.readout[:, v + s * a + k] = push_pre[k] / h


def with_stacks(core, values, batch=1):
    """Initial state whose stacks hold ``values`` (one list per stack)."""
    hidden, _ = core.initial_state(batch)
    stacks = torch.tensor(values, dtype=torch.float64).expand(batch, -1, -1).clone()
    return hidden, stacks


def reference_forward(core, inputs, state, resets=None, hard=False):
    """The equations of spec §3, written cell by cell for one row at a time (slow, independent of the
    vectorised code). Uses the core's weight layout: readout = [V | action scores per stack | D]."""
    U, P, W = core.embed, core.stack_to_hidden, core.readout
    R = core.hidden_to_hidden
    v, S, a, k, p = core.vocab_size, core.n_stacks, core.n_actions, core.depth, core.stack_size
    hidden0, stacks0 = state
    batch, steps = inputs.shape
    all_logits = torch.zeros(batch, steps, v, dtype=W.dtype)
    for b in range(batch):
        h = hidden0[b].clone()
        st = [[stacks0[b, s, i] for i in range(p)] for s in range(S)]
        row_hard = bool(hard[b]) if isinstance(hard, torch.Tensor) else bool(hard)
        for t in range(steps):
            if resets is not None and resets[b, t]:
                st = [[torch.tensor(-1.0, dtype=W.dtype)] * p for _ in range(S)]
                if R is not None:
                    h = torch.zeros_like(h)
            pre = U[inputs[b, t]].clone()
            for s in range(S):
                for i in range(k):
                    pre = pre + P[s * k + i] * st[s][i]
            if R is not None:
                pre = pre + h @ R
            h = torch.sigmoid(pre.clamp(-50, 50))
            all_logits[b, t] = h @ W[:, :v]
            new_stacks = []
            for s in range(S):
                act = torch.softmax(h @ W[:, v + s * a : v + (s + 1) * a], -1)
                if row_hard:
                    act = F.one_hot(act.argmax(), a).to(W.dtype)
                push = torch.sigmoid((h @ W[:, v + S * a + s]).clamp(-50, 50))
                old = st[s]
                new = []
                for i in range(p):
                    above = push if i == 0 else old[i - 1]
                    below = old[i + 1] if i + 1 < p else torch.tensor(-1.0, dtype=W.dtype)
                    cell = act[0] * above + act[1] * below
                    if a == 3:
                        cell = cell + act[2] * old[i]
                    new.append(cell)
                new_stacks.append(new)
            st = new_stacks
    return all_logits


# -----------------------------------------------------------------------------
# 1. The Stack RNN core (spec §3)


def test_hidden_is_sigmoid_of_input_plus_top_k_cells():
    """h_t = σ(U x_t + Σ_s P_s s_{t-1}[0:k]) with k = 2; deeper cells are not read; y_t = V h_t."""
    core = tiny_core(vocab=2, hidden=3, stacks=2, size=4)
    with torch.no_grad():
        core.embed.copy_(f64([[0.1, -0.2, 0.3], [0.4, 0.5, -0.6]]))
        core.stack_to_hidden.copy_(  # rows: stack0 cell0, stack0 cell1, stack1 cell0, stack1 cell1
            f64([[1.0, 0.0, 0.5], [0.0, 2.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 3.0]])
        )
    stacks = [[0.2, 0.3, 0.9, 0.9], [0.4, -1.0, -1.0, -1.0]]
    logits, (hidden, _), _ = core(torch.tensor([[1]]), with_stacks(core, stacks))
    # pre = U[1] + 0.2*P0 + 0.3*P1 + 0.4*P2 + (-1)*P3
    pre = torch.tensor([0.4 + 0.2 - 0.4, 0.5 + 0.6, -0.6 + 0.1 - 3.0], dtype=torch.float64)
    expected_h = 1 / (1 + torch.exp(-pre))
    torch.testing.assert_close(hidden[0], expected_h, **EXACT)
    torch.testing.assert_close(logits[0, 0], expected_h @ core.readout[:, :2], **EXACT)
    # Cells below the top k = 2 do not enter the hidden layer.
    deeper = [[0.2, 0.3, -0.7, 0.1], [0.4, -1.0, 0.5, 0.6]]
    _, (hidden_deeper, _), _ = core(torch.tensor([[1]]), with_stacks(core, deeper))
    torch.testing.assert_close(hidden_deeper, hidden, **EXACT)


def test_pre_activations_clipped_at_50():
    """Hidden pre-activations and σ(D h) are clipped to ±50 before the sigmoid."""
    core = tiny_core(hidden=3)
    saturate(core, actions=[[100.0, -100.0], [100.0, -100.0]], push_pre=[-80.0, 30.0])
    with torch.no_grad():
        core.embed[1] = f64([-70.0, -50.0, -20.0])
    _, (hidden, _), _ = core(torch.tensor([[1]]), core.initial_state(1))
    expected = torch.sigmoid(torch.tensor([-50.0, -50.0, -20.0], dtype=torch.float64))
    torch.testing.assert_close(hidden[0], expected, rtol=1e-12, atol=0)
    assert hidden[0, 0] > torch.sigmoid(torch.tensor(-70.0, dtype=torch.float64)) * 1e8  # really clipped
    # Push value: D h = -80 (h = 1) is clipped to -50; the second stack's 30 is inside the range.
    _, (_, stacks), _ = core(torch.tensor([[0]]), core.initial_state(1))
    top = stacks[0, :, 0]
    expected_top = torch.sigmoid(torch.tensor([-50.0, 30.0], dtype=torch.float64))
    torch.testing.assert_close(top, expected_top, rtol=1e-12, atol=0)


def test_no_bias_and_parameter_count():
    """No bias terms anywhere; parameters = V*H + S*k*H + H*(V + S*(actions+1)) (+ H*H with R)."""
    v, h, s, k = 5, 7, 3, 2
    for noop, recurrent in [(False, False), (True, False), (False, True), (True, True)]:
        core = StackRNN(v, h, s, 20, k, noop=noop, recurrent=recurrent)
        names = [name for name, _ in core.named_parameters()]
        assert not any("bias" in name for name in names), names
        actions = 3 if noop else 2
        expected = v * h + s * k * h + h * (v + s * (actions + 1)) + (h * h if recurrent else 0)
        assert sum(p.numel() for p in core.parameters()) == expected
        assert (core.hidden_to_hidden is not None) is recurrent
    # The Table 2 model (a^n b^n, 40 hidden, 10 stacks, k = 2, no NO-OP, R = 0): 80 + 800 + 1280.
    module = StackRNNModule(task="anbn")
    assert sum(p.numel() for p in module.parameters()) == 2160
    assert not any("bias" in name for name, _ in module.named_parameters())


def test_empty_cells_are_minus_one_at_start_and_after_reset():
    """All cells start at -1; a reset empties them again (a POP of an empty stack stays empty)."""
    core = tiny_core(stacks=2, size=5)
    hidden, stacks = core.initial_state(3)
    assert stacks.shape == (3, 2, 5)
    assert torch.equal(stacks, torch.full_like(stacks, -1.0))
    assert torch.equal(hidden, torch.zeros(3, 3, dtype=torch.float64))
    # Fill the stacks with pushes, then reset and POP: all -1 again.
    saturate(core, actions=[[100.0, -100.0], [100.0, -100.0]], push_pre=[0.5, -0.5])
    _, full, _ = core(torch.zeros(3, 4, dtype=torch.long), core.initial_state(3))
    assert (full[1][:, :, :4] > 0).all()
    saturate(core, actions=[[-100.0, 100.0], [-100.0, 100.0]], push_pre=[0.5, -0.5])
    resets = torch.tensor([[True], [False], [True]])
    _, (_, after), _ = core(torch.zeros(3, 1, dtype=torch.long), full, resets)
    assert torch.equal(after[0], torch.full((2, 5), -1.0, dtype=torch.float64))
    assert torch.equal(after[2], torch.full((2, 5), -1.0, dtype=torch.float64))
    torch.testing.assert_close(after[1, :, :3], full[1][1, :, 1:4], **EXACT)  # row 1 popped, not reset


def test_hidden_reads_minus_one_after_reset():
    """After a reset the hidden layer sees -1 in every top cell: h = σ(U x - Σ P rows)."""
    core = tiny_core(stacks=2, size=4, seed=3)
    state = with_stacks(core, [[0.3, 0.6, 0.1, 0.2], [0.9, 0.8, -1.0, -1.0]])
    _, (hidden, _), _ = core(torch.tensor([[0]]), state, torch.tensor([[True]]))
    expected = torch.sigmoid(core.embed[0] - core.stack_to_hidden.sum(0))
    torch.testing.assert_close(hidden[0], expected, **EXACT)


def test_push_puts_sigma_dh_on_top_and_shifts_down():
    """PUSH: s_t[0] = σ(D h), s_t[i] = s_{t-1}[i-1]; the bottom cell falls off."""
    core = tiny_core(stacks=2, size=4)
    saturate(core, actions=[[100.0, -100.0], [100.0, -100.0]], push_pre=[0.7, -1.3])
    state = with_stacks(core, [[0.1, 0.2, 0.3, 0.4], [0.5, 0.6, -1.0, -1.0]])
    _, (_, stacks), actions = core(torch.tensor([[0]]), state)
    sig = torch.sigmoid(torch.tensor([0.7, -1.3], dtype=torch.float64))
    expected = torch.tensor([[sig[0], 0.1, 0.2, 0.3], [sig[1], 0.5, 0.6, -1.0]], dtype=torch.float64)
    torch.testing.assert_close(stacks[0], expected, rtol=0, atol=1e-15)
    assert actions.shape == (1, 1, 2, 2)
    torch.testing.assert_close(actions[0, 0, :, 0], torch.ones(2, dtype=torch.float64), rtol=0, atol=1e-15)


def test_pop_shifts_up_and_fills_bottom_with_minus_one():
    """POP: s_t[i] = s_{t-1}[i+1] and the bottom cell receives -1."""
    core = tiny_core(stacks=2, size=4)
    saturate(core, actions=[[-100.0, 100.0], [-100.0, 100.0]], push_pre=[0.7, -1.3])
    state = with_stacks(core, [[0.1, 0.2, 0.3, 0.4], [0.5, 0.6, -1.0, -1.0]])
    _, (_, stacks), _ = core(torch.tensor([[0]]), state)
    expected = torch.tensor([[0.2, 0.3, 0.4, -1.0], [0.6, -1.0, -1.0, -1.0]], dtype=torch.float64)
    torch.testing.assert_close(stacks[0], expected, rtol=0, atol=1e-15)


def test_soft_actions_mix_push_and_pop():
    """Soft update: s_t = a_PUSH · pushed + a_POP · popped, each stack with its own actions."""
    core = tiny_core(stacks=2, size=3)
    # Stack 0: scores (0, 0) -> a = (1/2, 1/2); stack 1: scores (log 3, 0) -> a = (3/4, 1/4).
    saturate(core, actions=[[0.0, 0.0], [math.log(3.0), 0.0]], push_pre=[0.0, 0.0])
    state = with_stacks(core, [[0.2, 0.4, 0.6], [0.8, -1.0, -1.0]])
    _, (_, stacks), actions = core(torch.tensor([[1]]), state)
    expected = torch.tensor(
        [
            [0.5 * 0.5 + 0.5 * 0.4, 0.5 * 0.2 + 0.5 * 0.6, 0.5 * 0.4 + 0.5 * -1.0],
            [0.75 * 0.5 + 0.25 * -1.0, 0.75 * 0.8 + 0.25 * -1.0, 0.75 * -1.0 + 0.25 * -1.0],
        ],
        dtype=torch.float64,
    )
    torch.testing.assert_close(stacks[0], expected, **EXACT)
    torch.testing.assert_close(actions[0, 0], torch.tensor([[0.5, 0.5], [0.75, 0.25]], dtype=torch.float64))


def test_noop_leaves_the_stack_unchanged():
    """With NO-OP (action order push, pop, no-op) a pure no-op keeps every cell; soft thirds mix all three."""
    core = tiny_core(stacks=2, size=4, noop=True)
    assert core.n_actions == 3
    values = [[0.1, 0.2, 0.3, 0.4], [0.5, 0.6, -1.0, -1.0]]
    saturate(core, actions=[[-100.0, -100.0, 100.0]] * 2, push_pre=[0.7, -1.3])
    _, (_, stacks), _ = core(torch.tensor([[0]]), with_stacks(core, values))
    torch.testing.assert_close(stacks[0], torch.tensor(values, dtype=torch.float64), rtol=0, atol=1e-15)
    saturate(core, actions=[[0.0, 0.0, 0.0]] * 2, push_pre=[0.0, 0.0])
    _, (_, stacks), _ = core(torch.tensor([[0]]), with_stacks(core, values))
    old = torch.tensor(values, dtype=torch.float64)
    pushed = torch.cat([torch.full((2, 1), 0.5, dtype=torch.float64), old[:, :-1]], 1)
    popped = torch.cat([old[:, 1:], torch.full((2, 1), -1.0, dtype=torch.float64)], 1)
    torch.testing.assert_close(stacks[0], (pushed + popped + old) / 3, **EXACT)


def test_output_uses_hidden_from_stack_before_this_steps_update():
    """y_t = V h_t where h_t reads s_{t-1}, the stacks before step t's own push/pop."""
    core = tiny_core(vocab=2, hidden=3, stacks=2, size=4, seed=7)
    with torch.no_grad():
        core.stack_to_hidden.mul_(10)  # make the stacks matter a lot for h
        core.readout.mul_(10)
    inputs = torch.tensor([[0, 1]])
    state = core.initial_state(1)
    logits, _, _ = core(inputs, state)
    _, (_, stacks_after_0), _ = core(inputs[:, :1], state)
    _, (_, stacks_after_1), _ = core(inputs, state)
    V = core.readout[:, :2]

    def hidden_from(x, stacks):
        return torch.sigmoid(core.embed[x] + stacks[0, :, :2].reshape(-1) @ core.stack_to_hidden)

    torch.testing.assert_close(logits[0, 0], hidden_from(0, state[1]) @ V, **EXACT)
    torch.testing.assert_close(logits[0, 1], hidden_from(1, stacks_after_0) @ V, **EXACT)
    # The test can tell: reading the already-updated stacks would give different logits.
    assert not torch.allclose(logits[0, 1], hidden_from(1, stacks_after_1) @ V, atol=1e-6)


@pytest.mark.parametrize("use_kernel", [True, False], ids=["kernel", "torch"])
def test_window_matches_spec_equations_cell_by_cell(use_kernel):
    """Several steps, resets and per-row rounding, against a literal cell-by-cell reading of §3, for both
    implementations (the kernel serves only cores without R: the recurrent case runs the loop)."""
    for noop, recurrent in [(False, False), (True, False), (True, True)]:
        core = tiny_core(3, 4, 2, 5, noop=noop, recurrent=recurrent, seed=11, use_kernel=use_kernel)
        assert core.use_kernel == (use_kernel and not recurrent)
        with torch.no_grad():
            for p in core.parameters():
                p.mul_(8)  # far from uniform actions
        gen = torch.Generator().manual_seed(1)
        inputs = torch.randint(0, 3, (3, 7), generator=gen)
        resets = torch.zeros(3, 7, dtype=torch.bool)
        resets[0, 0] = resets[1, 4] = resets[2, 2] = True
        state = (
            torch.rand(3, 4, generator=gen, dtype=torch.float64),
            torch.rand(3, 2, 5, generator=gen, dtype=torch.float64),
        )
        hard = torch.tensor([False, True, False])
        logits, _, _ = core(inputs, state, resets, hard=hard)
        expected = reference_forward(core, inputs, state, resets, hard)
        torch.testing.assert_close(logits, expected.detach(), **EXACT)


def test_init_is_sum_of_three_uniforms():
    """Every weight is the sum of three U(-0.1, 0.1): range ±0.3, variance 0.01, excess kurtosis -0.4
    (a single U(-0.1, 0.1) would have variance 0.0033, U(-0.3, 0.3) 0.03, a Gaussian kurtosis 0)."""
    torch.manual_seed(0)
    core = StackRNN(50, 200, n_stacks=10, stack_size=20, depth=2, recurrent=True)
    for name, p in core.named_parameters():
        w = p.detach().double().flatten()
        assert w.abs().max() <= 0.3, name
        assert 0.008 < w.var() < 0.012, (name, float(w.var()))
    w = torch.cat([p.detach().double().flatten() for p in core.parameters()])
    assert w.numel() == 10_000 + 4_000 + 200 * 80 + 40_000
    assert abs(float(w.mean())) < 0.002
    assert abs(float(w.var()) - 0.01) < 0.0005
    kurtosis = float(((w - w.mean()) ** 4).mean() / w.var() ** 2) - 3
    assert abs(kurtosis + 0.4) < 0.1, kurtosis
    # Beyond ±0.2 (impossible for U(-0.1, 0.1)): P = 2 * (1/48) for the sum of three.
    assert 0.03 < float((w.abs() > 0.2).double().mean()) < 0.055


def test_rounding_gives_one_hot_actions_only_in_flagged_rows():
    """hard=True: every applied action is exactly one-hot (the argmax); a [B] bool rounds only those rows."""
    core = tiny_core(vocab=2, hidden=5, stacks=3, size=6, noop=True, seed=5)
    inputs = torch.tensor([[0, 0, 1, 1, 0], [1, 0, 1, 0, 0], [0, 1, 1, 1, 1]])
    state = core.initial_state(3)
    _, _, soft = core(inputs, state)
    _, _, hard_all = core(inputs, state, hard=True)
    assert soft.shape == hard_all.shape == (3, 5, 3, 3)
    assert ((soft > 0.01) & (soft < 0.99)).any()  # the soft actions are really soft
    assert set(hard_all.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(hard_all.sum(-1), torch.ones(3, 5, 3, dtype=torch.float64))
    # At step 0 both runs share the state: the one-hot is the argmax of the soft action.
    assert torch.equal(hard_all[:, 0].argmax(-1), soft[:, 0].argmax(-1))
    rows = torch.tensor([True, False, True])
    logits_mixed, _, mixed = core(inputs, state, hard=rows)
    logits_soft, _, _ = core(inputs, state)
    logits_hard, _, _ = core(inputs, state, hard=True)
    assert torch.equal(mixed[[0, 2]], hard_all[[0, 2]])
    torch.testing.assert_close(mixed[1], soft[1], **EXACT)
    torch.testing.assert_close(logits_mixed[1], logits_soft[1], **EXACT)
    torch.testing.assert_close(logits_mixed[[0, 2]], logits_hard[[0, 2]], **EXACT)


def test_reset_empties_only_the_flagged_row_at_the_flagged_step():
    """resets[b, t] empties row b's stacks just before step t; the other rows and steps are untouched."""
    core = tiny_core(vocab=2, hidden=4, stacks=2, size=6, seed=2)
    inputs = torch.tensor([[0, 0, 1, 1, 0, 1], [0, 0, 0, 1, 1, 1]])
    state = core.initial_state(2)
    plain, _, _ = core(inputs, state)
    resets = torch.zeros(2, 6, dtype=torch.bool)
    resets[1, 3] = True
    logits, _, _ = core(inputs, state, resets)
    torch.testing.assert_close(logits[0], plain[0], **EXACT)
    torch.testing.assert_close(logits[1, :3], plain[1, :3], **EXACT)
    fresh, _, _ = core(inputs[1:, 3:], core.initial_state(1))
    torch.testing.assert_close(logits[1, 3:], fresh[0], **EXACT)
    assert not torch.allclose(logits[1, 3:], plain[1, 3:], atol=1e-6)  # the reset changed something


# -----------------------------------------------------------------------------
# 2. Gradients


@pytest.mark.parametrize("use_kernel", [True, False], ids=["kernel", "torch"])
def test_gradcheck_through_the_soft_stacks(use_kernel):
    """Analytic gradients of the logits w.r.t. U, P, [V|A|D] and the initial stacks match finite
    differences (the kernel's hand-written backward and autograd through the loop)."""
    core = tiny_core(vocab=2, hidden=3, stacks=2, size=4, noop=True, seed=4, use_kernel=use_kernel)
    core.full_stack_gradient = True  # gradcheck also feeds gradient into the final stacks
    inputs = torch.tensor([[0, 1, 1], [1, 0, 1]])
    resets = torch.tensor([[False, False, False], [False, True, False]])
    hidden, _ = core.initial_state(2)
    stacks = torch.rand(2, 2, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    params = {name: p.detach().clone().requires_grad_() for name, p in core.named_parameters()}
    names = list(params)

    def logits_of(*tensors):
        weights = dict(zip(names, tensors[:-1], strict=True))
        out, _, _ = torch.func.functional_call(core, weights, (inputs, (hidden, tensors[-1]), resets))
        return out

    assert names == ["embed", "stack_to_hidden", "readout"]
    assert torch.autograd.gradcheck(
        logits_of, (*params.values(), stacks.requires_grad_()), eps=1e-6, atol=1e-7
    )


def window_gradients(core, inputs, state, resets):
    """Logits, final stacks and the gradients of a loss that weighs every logit differently."""
    core.zero_grad()
    stacks = state[1].clone().requires_grad_()
    logits, (_, final), actions = core(inputs, (state[0], stacks), resets)
    weights = torch.linspace(-1, 2, logits.numel(), dtype=logits.dtype).view_as(logits)
    (logits * weights).sum().backward()
    grads = [p.grad.clone() for p in core.parameters()]
    return logits.detach(), final.detach(), actions, grads, stacks.grad


# Without any C compiler the kernel cannot exist and the model runs the loop (tested below); with one, the
# kernel must build, and these tests fail if it does not.
needs_compiler = pytest.mark.skipif(
    shutil.which(os.environ.get("CC", "cc")) is None, reason="no C compiler: the Stack RNN runs its loop"
)


@needs_compiler
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("noop", [False, True])
def test_kernel_equals_the_pytorch_loop_at_the_papers_sizes(dtype, noop):
    """The compiled window (40 hidden, 10 stacks of 200, a 60-step window with resets, initial stacks not
    empty) gives the loop's logits, stacks, actions and gradients, including the gradient of the initial
    stacks that the kernel computes from the top depth + T cells it keeps."""
    torch.manual_seed(5)
    core = StackRNN(3, 40, 10, 200, 2, noop).to(dtype)
    assert core.use_kernel and kernel.available()
    gen = torch.Generator().manual_seed(2)
    inputs = torch.randint(0, 3, (4, 60), generator=gen)
    resets = torch.zeros(4, 60, dtype=torch.bool)
    resets[1, 9] = resets[3, 0] = True
    state = (core.initial_state(4)[0], torch.rand(4, 10, 200, generator=gen, dtype=dtype) * 2 - 1)
    fast = window_gradients(core, inputs, state, resets)
    core.use_kernel = False
    slow = window_gradients(core, inputs, state, resets)
    tol = {"rtol": 1e-10, "atol": 1e-10} if dtype == torch.float64 else {"rtol": 2e-4, "atol": 2e-4}
    for a, b in zip(fast[:3], slow[:3], strict=True):
        torch.testing.assert_close(a, b, **tol)
    for a, b in zip(fast[3], slow[3], strict=True):
        torch.testing.assert_close(a, b, **tol)
    torch.testing.assert_close(fast[4], slow[4], **tol)
    assert slow[4][0, :, 2:40].abs().sum() > 0  # the gradient does reach below the top cells
    # Row 3 is reset before its first step; row 1 reads its initial stacks for 9 steps, so their error
    # reaches depth + 9 - 1 = 10 cells.
    assert slow[4][3].abs().sum() == 0
    assert slow[4][1, :, :10].abs().sum() > 0 and slow[4][1, :, 10:].abs().sum() == 0


@needs_compiler
def test_kernel_refuses_gradient_into_stacks_it_did_not_keep():
    """Without full_stack_gradient the kernel keeps the top depth + T + 1 cells of each step; a loss on
    the final stacks must then fail loudly rather than return a wrong gradient."""
    core = tiny_core(vocab=2, hidden=3, stacks=2, size=40, seed=1)
    _, (_, final), _ = core(torch.zeros(1, 5, dtype=torch.long), core.initial_state(1))
    with pytest.raises(RuntimeError, match="full=True"):
        final.sum().backward()
    core.full_stack_gradient = True
    _, (_, final), _ = core(torch.zeros(1, 5, dtype=torch.long), core.initial_state(1))
    final.sum().backward()
    assert core.readout.grad.abs().sum() > 0


@pytest.mark.parametrize("problem", ["no C compiler", "cannot build"])
def test_without_a_kernel_the_loop_runs_with_a_warning(monkeypatch, tmp_path, problem):
    """No compiler, or a cache folder that cannot be written (here a file stands where it should be):
    a warning names the problem and the model runs the PyTorch loop."""
    inputs = torch.tensor([[0, 1, 1]])
    (tmp_path / "not-a-folder").write_text("")
    try:
        with monkeypatch.context() as env:
            if problem == "no C compiler":
                env.setenv("REPRO_CACHE", str(tmp_path))
                env.setenv("CC", "no-such-compiler")
            else:
                env.setenv("REPRO_CACHE", str(tmp_path / "not-a-folder"))
            kernel.library.cache_clear()
            with pytest.warns(UserWarning, match=problem):
                assert not kernel.available()
            core = tiny_core(seed=2)
            logits, _, _ = core(inputs, core.initial_state(1))
            torch.testing.assert_close(
                logits, reference_forward(core, inputs, core.initial_state(1)), **EXACT
            )
    finally:
        kernel.library.cache_clear()
    if shutil.which(os.environ.get("CC", "cc")):
        assert kernel.available()  # built (or found) again under the user's own settings


# -----------------------------------------------------------------------------
# 3. Baselines


def test_rnn_baseline_has_no_stacks_and_uses_R():
    """architecture="rnn": the bias-free sigmoid Elman net h_t = σ(U x_t + R h_{t-1}), y_t = V h_t."""
    torch.manual_seed(0)
    module = StackRNNModule(task="anbncn", architecture="rnn", hidden_size=6).double()
    core = module.core
    assert isinstance(core, StackRNN) and core.n_stacks == 0 and core.recurrent
    assert core.hidden_to_hidden.shape == (6, 6) and core.hidden_to_hidden.requires_grad
    assert sum(p.numel() for p in module.parameters()) == 3 * 6 + 6 * 6 + 6 * 3
    assert not module.has_stacks
    inputs = torch.tensor([[0, 1, 2, 2, 0], [2, 2, 1, 0, 0]])
    resets = torch.zeros(2, 5, dtype=torch.bool)
    resets[0, 3] = True
    logits, (hidden, _), actions = core(inputs, core.initial_state(2), resets)
    assert actions.shape[2] == 0
    for b in range(2):
        h = torch.zeros(6, dtype=torch.float64)
        for t in range(5):
            if resets[b, t]:
                h = torch.zeros_like(h)  # the reset zeroes the flagged row's hidden state only
            h = torch.sigmoid(core.embed[inputs[b, t]] + h @ core.hidden_to_hidden)
            torch.testing.assert_close(logits[b, t], h @ core.readout, **EXACT)
        torch.testing.assert_close(hidden[b], h, **EXACT)
    with torch.no_grad():
        core.hidden_to_hidden.zero_()
    no_r, _, _ = core(inputs, core.initial_state(2), resets)
    torch.testing.assert_close(no_r[:, 0], logits[:, 0], **EXACT)
    assert not torch.allclose(no_r[:, 1], logits[:, 1])  # R really enters from step 1 on


def test_lstm_baseline_matches_torch_lstm_and_resets_one_row():
    """architecture="lstm" is nn.LSTM + Linear on one-hot inputs; a reset zeroes only the flagged row."""
    torch.manual_seed(0)
    module = StackRNNModule(task="anbncn", architecture="lstm", hidden_size=5, num_layers=2)
    core = module.core
    assert isinstance(core, LSTMBaseline)
    lstm = torch.nn.LSTM(3, 5, 2, batch_first=True)
    linear = torch.nn.Linear(5, 3)
    lstm.load_state_dict(core.lstm.state_dict())
    linear.load_state_dict(core.readout.state_dict())
    inputs = torch.tensor([[0, 1, 2, 2, 0, 1], [2, 2, 1, 0, 0, 1]])
    x = F.one_hot(inputs, 3).float()
    h0, c0 = core.initial_state(2)
    assert h0.shape == c0.shape == (2, 2, 5) and not h0.any() and not c0.any()
    with torch.no_grad():
        logits, (h, c), actions = core(inputs, (h0, c0))
        out, (h_ref, c_ref) = lstm(x, (h0, c0))
        torch.testing.assert_close(logits, linear(out))
        torch.testing.assert_close(h, h_ref)
        torch.testing.assert_close(c, c_ref)
        assert actions.numel() == 0
        resets = torch.zeros(2, 6, dtype=torch.bool)
        resets[1, 3] = True
        reset_logits, (h_r, c_r), _ = core(inputs, (h0, c0), resets)
        torch.testing.assert_close(reset_logits[0], logits[0])
        torch.testing.assert_close(h_r[:, 0], h[:, 0])
        torch.testing.assert_close(reset_logits[1, :3], logits[1, :3])
        out_fresh, (h_f, _) = lstm(x[1:, 3:], (h0[:, 1:], c0[:, 1:]))
        torch.testing.assert_close(reset_logits[1, 3:], linear(out_fresh[0]))
        torch.testing.assert_close(h_r[:, 1], h_f[:, 0])
        assert not torch.allclose(reset_logits[1, 3:], logits[1, 3:])


# -----------------------------------------------------------------------------
# 4. StackRNNModule: loss, validation entropy, LR rule (spec §2.4, §8)


def first_window(task="anbn", batch_size=3, epoch=2, bptt=50, seed=0):
    data = StackTaskData(task=task, batch_size=batch_size, sequences_per_stream=40, bptt=bptt, seed=seed)
    batch = data.train_batches(epoch)
    return {k: v[:, :bptt] for k, v in batch.items()}, {k: v[:, bptt : 2 * bptt] for k, v in batch.items()}


def test_training_loss_is_masked_sum_over_window_divided_by_streams():
    """loss = Σ_{b,t} mask · CE(y_bt, target_bt) / B, with the state carried (and detached) to the next
    window."""
    torch.manual_seed(0)
    module = StackRNNModule(task="anbn", hidden_size=8, n_stacks=3)
    batch, nxt = first_window(batch_size=3)
    mask = (torch.rand(batch["loss_mask"].shape, generator=torch.Generator().manual_seed(0)) > 0.3).float()
    batch["loss_mask"] = mask
    loss = module.training_step(batch, 0)
    with torch.no_grad():
        logits, state, _ = module.core(batch["inputs"], module.core.initial_state(3), batch["resets"])
        manual = -(F.log_softmax(logits, -1).gather(-1, batch["targets"][..., None])[..., 0] * mask).sum() / 3
    torch.testing.assert_close(loss.detach(), manual, rtol=1e-6, atol=0)
    assert loss.requires_grad
    assert all(not t.requires_grad for t in module._state)
    torch.testing.assert_close(module._state[1], state[1])
    loss2 = module.training_step(nxt, 1)
    with torch.no_grad():
        logits2, _, _ = module.core(nxt["inputs"], state, nxt["resets"])
        manual2 = F.cross_entropy(logits2.transpose(1, 2), nxt["targets"], reduction="sum") / 3
    torch.testing.assert_close(loss2.detach(), manual2, rtol=1e-6, atol=0)
    module.on_train_epoch_start()  # the stacks are emptied at every epoch start
    assert module._state is None


def test_overlap_back_propagates_through_the_previous_window():
    """overlap=True: the second window's loss is the loss of (previous + current window) run from the previous
    window's start state, scored on the current window only, and its gradient flows into the previous
    window."""
    torch.manual_seed(0)
    module = StackRNNModule(task="anbn", hidden_size=8, n_stacks=3, overlap=True)
    batch, nxt = first_window(batch_size=3)
    module.training_step(batch, 0)
    module.core.zero_grad()
    loss = module.training_step(nxt, 1)
    loss.backward()
    grads = {k: p.grad.clone() for k, p in module.core.named_parameters()}

    module.core.zero_grad()
    joined = {k: torch.cat([batch[k], nxt[k]], 1) for k in ("inputs", "resets")}
    logits, _, _ = module.core(joined["inputs"], module.core.initial_state(3), joined["resets"])
    steps = nxt["inputs"].shape[1]
    manual = F.cross_entropy(logits[:, -steps:].transpose(1, 2), nxt["targets"], reduction="sum") / 3
    manual.backward()
    torch.testing.assert_close(loss.detach(), manual.detach(), rtol=1e-6, atol=0)
    for name, p in module.core.named_parameters():
        torch.testing.assert_close(grads[name], p.grad, rtol=1e-5, atol=1e-7)

    # Without overlap the same loss sees only the current window, so its gradient differs.
    plain = StackRNNModule(task="anbn", hidden_size=8, n_stacks=3)
    plain.core.load_state_dict(module.core.state_dict())
    plain.training_step(batch, 0)
    plain.core.zero_grad()
    plain.training_step(nxt, 1).backward()
    assert not torch.allclose(plain.core.stack_to_hidden.grad, grads["stack_to_hidden"])


def fake_trainer(epoch, nmax, optimizer, sanity=False):
    return SimpleNamespace(
        sanity_checking=sanity,
        current_epoch=epoch,
        datamodule=SimpleNamespace(hparams=SimpleNamespace(nmax=nmax)),
        optimizers=[optimizer],
        should_stop=False,
    )


def end_validation(module, epoch, entropy, nmax, optimizer, logged):
    """Drive on_validation_epoch_end as if the validation stream had mean -log10 p = ``entropy``."""
    module.trainer = fake_trainer(epoch, nmax, optimizer)
    module._val_count = 100
    module._val_sum = torch.full((module._rows,), entropy * math.log(10) * 100, dtype=torch.float64)
    logged.clear()
    module.on_validation_epoch_end()
    assert logged["val/entropy"] == pytest.approx(entropy, rel=1e-12)
    return module.trainer


def weights(module):
    return {k: v.clone() for k, v in module.core.state_dict().items()}


def perturb(module):
    with torch.no_grad():
        for p in module.core.parameters():
            p.add_(0.01)


def test_lr_rule_halves_and_restores_only_in_second_half_of_curriculum(monkeypatch):
    """§2.4: snapshot when entropy improves (or e = 0); if not, and e > N/2: lr /= 2 and restore the
    snapshot; for e <= N/2 nothing happens."""
    torch.manual_seed(0)
    module = StackRNNModule(task="anbn", hidden_size=6, n_stacks=2, lr=0.1)
    logged = {}
    monkeypatch.setattr(module, "log", lambda name, value, **kw: logged.__setitem__(name, value))
    opt = module.configure_optimizers()
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["lr"] == 0.1
    nmax = 4

    end_validation(module, 0, 0.9, nmax, opt, logged)  # e = 0: always a snapshot
    snap = weights(module)
    assert module.best_entropy == pytest.approx(0.9) and module.snapshot is not None
    perturb(module)
    trained = weights(module)

    trainer = end_validation(module, 2, 1.1, nmax, opt, logged)  # worse, e = 2 = N/2: nothing happens
    assert module.lr == 0.1 and opt.param_groups[0]["lr"] == 0.1 and not trainer.should_stop
    assert all(torch.equal(trained[k], v) for k, v in module.core.state_dict().items())
    assert module.best_entropy == pytest.approx(0.9)

    trainer = end_validation(module, 3, 1.0, nmax, opt, logged)  # worse, e = 3 > N/2: halve and restore
    assert module.lr == 0.05 and opt.param_groups[0]["lr"] == 0.05 and not trainer.should_stop
    assert all(torch.equal(snap[k], v) for k, v in module.core.state_dict().items())
    assert module.best_entropy == pytest.approx(0.9)

    perturb(module)
    better = weights(module)
    end_validation(module, 4, 0.5, nmax, opt, logged)  # improved: new snapshot, lr kept
    assert module.lr == 0.05 and module.best_entropy == pytest.approx(0.5)
    assert logged["val/best_entropy"] == pytest.approx(0.5)
    perturb(module)
    end_validation(module, 5, 0.5, nmax, opt, logged)  # equal is "not improved": restore the new snapshot
    assert module.lr == 0.025
    assert all(torch.equal(better[k], v) for k, v in module.core.state_dict().items())


def test_solved_entropy_restores_the_snapshot_on_every_epoch_that_does_not_improve(monkeypatch):
    """train_add.cpp: on an epoch that does not improve, once the best validation entropy is below 0.1 ("it
    works") the model goes back to the best snapshot whatever the epoch; the rate still halves only for
    e > N/2. Without solved_entropy (train_toy.cpp) a worse epoch in the first half changes nothing."""
    torch.manual_seed(0)
    module = StackRNNModule(task="addition", hidden_size=6, n_stacks=2, noop=True, solved_entropy=0.1)
    logged = {}
    monkeypatch.setattr(module, "log", lambda name, value, **kw: logged.__setitem__(name, value))
    opt = module.configure_optimizers()
    nmax = 20

    end_validation(module, 0, 0.3, nmax, opt, logged)
    perturb(module)
    trained = weights(module)
    end_validation(module, 1, 0.4, nmax, opt, logged)  # worse, best 0.3 >= 0.1, e <= N/2: nothing
    assert all(torch.equal(trained[k], v) for k, v in module.core.state_dict().items())

    end_validation(module, 2, 0.05, nmax, opt, logged)  # improved below 0.1: the snapshot "works"
    best = weights(module)
    perturb(module)
    trained = weights(module)
    end_validation(module, 3, 0.06, nmax, opt, logged)  # worse, e = 3 <= N/2: back to the snapshot, lr kept
    assert all(torch.equal(best[k], v) for k, v in module.core.state_dict().items())
    assert module.lr == 0.1 and opt.param_groups[0]["lr"] == 0.1

    perturb(module)
    end_validation(module, 11, 0.07, nmax, opt, logged)  # worse, e > N/2: halve and restore, as always
    assert module.lr == 0.05
    assert all(torch.equal(best[k], v) for k, v in module.core.state_dict().items())
    assert [e["restored"] for e in module.history] == [False, False, False, True, True]

    without_rule = StackRNNModule(task="addition", hidden_size=6, n_stacks=2, noop=True)
    monkeypatch.setattr(without_rule, "log", lambda name, value, **kw: logged.__setitem__(name, value))
    without_rule.core.load_state_dict(best)
    end_validation(without_rule, 0, 0.05, nmax, without_rule.configure_optimizers(), logged)
    without_rule.core.load_state_dict(trained)
    end_validation(without_rule, 3, 0.06, nmax, without_rule.trainer.optimizers[0], logged)
    assert all(torch.equal(trained[k], v) for k, v in without_rule.core.state_dict().items())
    assert "restored" not in without_rule.history[0]


def test_record_keeps_the_validation_curve_learning_rates_and_best_epochs(monkeypatch):
    """The record's details hold one entry per epoch (both validation entropies, the rate the epoch trained
    with and the one the rule leaves), and the epochs of the tested snapshots, so that a run's schedule
    and the snapshot behind its numbers can be read from the record alone; a resume keeps them."""
    torch.manual_seed(0)
    module = StackRNNModule(task="anbn", hidden_size=6, n_stacks=2, lr=0.1)
    logged = {}
    monkeypatch.setattr(module, "log", lambda name, value, **kw: logged.__setitem__(name, value))
    opt = module.configure_optimizers()

    def validate(epoch, soft, rounded):
        module.trainer = fake_trainer(epoch, 4, opt)
        module._val_count = 1
        module._val_sum = torch.tensor([soft, rounded], dtype=torch.float64) * math.log(10)
        module.on_validation_epoch_end()

    validate(0, 0.9, 0.8)
    validate(1, 0.7, 0.9)  # soft improves, rounded does not
    validate(3, 0.8, 0.6)  # soft worse with e > N/2: halve; rounded improves
    curve = module.test_details()["val_curve"]
    assert [e["epoch"] for e in curve] == [0, 1, 3]
    assert [e["val_entropy_soft"] for e in curve] == pytest.approx([0.9, 0.7, 0.8])
    assert [e["val_entropy_rounding"] for e in curve] == pytest.approx([0.8, 0.9, 0.6])
    assert [e["lr"] for e in curve] == [0.1, 0.1, 0.1]
    assert [e["next_lr"] for e in curve] == [0.1, 0.1, 0.05]
    assert [e["improved"] for e in curve] == [True, True, False]
    assert [e["rounded_improved"] for e in curve] == [True, False, True]
    details = module.test_details()
    assert details["best_epoch"] == 1 and details["best_epoch_rounding"] == 3
    json.dumps(details)  # the record is JSON

    checkpoint = {}
    module.on_save_checkpoint(checkpoint)
    resumed = StackRNNModule(task="anbn", hidden_size=6, n_stacks=2, lr=0.1)
    resumed.on_load_checkpoint(checkpoint)
    assert resumed.test_details() == details

    hard = StackRNNModule(task="anbn", hidden_size=6, n_stacks=2, rounding=True)
    monkeypatch.setattr(hard, "log", lambda name, value, **kw: None)
    module, opt = hard, hard.configure_optimizers()
    validate(0, 0.5, 0.9)
    validate(1, 0.4, 0.7)
    assert hard.test_details()["best_epoch"] == hard.test_details()["best_epoch_rounding"] == 1
    assert "rounded_improved" not in hard.test_details()["val_curve"][0]


def test_lr_rule_stops_once_lr_below_lr_min(monkeypatch):
    """Training stops when halving takes the lr below lr_min (1e-5), not before."""
    module = StackRNNModule(task="anbn", hidden_size=4, n_stacks=1, lr=4e-5, lr_min=1e-5)
    logged = {}
    monkeypatch.setattr(module, "log", lambda name, value, **kw: logged.__setitem__(name, value))
    opt = module.configure_optimizers()
    end_validation(module, 0, 0.3, 15, opt, logged)
    assert not end_validation(module, 8, 0.4, 15, opt, logged).should_stop  # 2e-5
    assert not end_validation(module, 9, 0.4, 15, opt, logged).should_stop  # 1e-5: not below
    assert module.lr == pytest.approx(1e-5)
    assert end_validation(module, 10, 0.4, 15, opt, logged).should_stop  # 5e-6 < 1e-5
    assert opt.param_groups[0]["lr"] == pytest.approx(5e-6)


def test_lr_rule_ignores_sanity_check(monkeypatch):
    """The sanity-check validation logs the entropy but takes no snapshot and changes nothing."""
    module = StackRNNModule(task="anbn", hidden_size=4, n_stacks=1)
    logged = {}
    monkeypatch.setattr(module, "log", lambda name, value, **kw: logged.__setitem__(name, value))
    module.trainer = fake_trainer(0, 15, module.configure_optimizers(), sanity=True)
    module._val_sum, module._val_count = torch.tensor([2.0, 2.0], dtype=torch.float64), 4
    module.on_validation_epoch_end()
    assert logged["val/entropy"] == pytest.approx(0.5 / math.log(10))
    assert module.snapshot is None and module.best_entropy == math.inf


def test_validation_entropy_is_mean_minus_log10_p_over_the_stream(monkeypatch):
    """Validation entropy = mean -log10 p(target) over every character of the stream (base 10, not nats),
    with the state carried from one validation window to the next."""
    torch.manual_seed(0)
    module = StackRNNModule(task="anbn", hidden_size=8, n_stacks=3)
    data = StackTaskData(task="anbn", validation_sequences=30, window=37)
    full = data.validation_batch(0)
    length = full["inputs"].shape[1]
    assert full["resets"].sum() == 1 and full["resets"][0, 0]  # emptied once before validation
    logged = {}
    monkeypatch.setattr(module, "log", lambda name, value, **kw: logged.__setitem__(name, value))
    module.trainer = fake_trainer(0, 15, module.configure_optimizers(), sanity=True)
    module.on_validation_epoch_start()
    windows = list(data.val_dataloader())
    assert len(windows) == math.ceil(length / 37)  # the tail window is kept: every character counts
    with torch.no_grad():
        for i, batch in enumerate(windows):
            module.validation_step(batch, i)
        module.on_validation_epoch_end()
        logits, _, _ = module.core(full["inputs"], module.core.initial_state(1), full["resets"])
        p = logits.softmax(-1).gather(-1, full["targets"][..., None])[..., 0].double()
        hard_logits, _, _ = module.core(
            full["inputs"], module.core.initial_state(1), full["resets"], hard=True
        )
        p_hard = hard_logits.softmax(-1).gather(-1, full["targets"][..., None])[..., 0].double()
    assert module._val_count == length
    assert logged["val/entropy"] == pytest.approx(float(-torch.log10(p).mean()), rel=1e-5)
    assert logged["val/entropy_soft"] == logged["val/entropy"]
    assert logged["val/entropy_rounding"] == pytest.approx(float(-torch.log10(p_hard).mean()), rel=1e-5)


def test_rounded_snapshot_is_the_best_under_rounded_validation(monkeypatch, tmp_path):
    """Without -hard the LR rule follows soft validation, and the weights with the best *rounded* validation
    entropy are kept apart for the "+ rounding" row; with -hard (rounding=True) one snapshot serves both."""
    torch.manual_seed(0)
    module = StackRNNModule(task="anbn", hidden_size=8, n_stacks=3)
    optimizer = module.configure_optimizers()
    logged = {}
    monkeypatch.setattr(module, "log", lambda name, value, **kw: logged.__setitem__(name, value))

    def validate(epoch, soft, rounded):
        module.trainer = fake_trainer(epoch, 15, optimizer)
        module._val_count = 1
        module._val_sum = torch.tensor([soft, rounded], dtype=torch.float64) * math.log(10)
        module.on_validation_epoch_end()

    validate(0, 0.5, 0.9)
    perturb(module)
    at_epoch_1 = weights(module)
    validate(1, 0.6, 0.4)  # soft got worse, rounded got better
    assert module.best_entropy == pytest.approx(0.5) and module.best_rounded_entropy == pytest.approx(0.4)
    assert all(torch.equal(module.rounded_snapshot[k], at_epoch_1[k]) for k in at_epoch_1)
    assert not all(torch.equal(module.snapshot[k], at_epoch_1[k]) for k in at_epoch_1)
    assert logged["val/entropy"] == pytest.approx(0.6) and logged["val/entropy_rounding"] == pytest.approx(
        0.4
    )

    validate(2, 0.45, 0.35)  # both improve: one snapshot object serves both rows, also after a checkpoint
    assert module.rounded_snapshot is module.snapshot
    checkpoint = {}
    module.on_save_checkpoint(checkpoint)
    path = tmp_path / "state.pt"
    torch.save(checkpoint, path)
    module.on_load_checkpoint(torch.load(path, weights_only=False))
    assert module.rounded_snapshot is module.snapshot

    hard = StackRNNModule(task="anbn", hidden_size=8, n_stacks=3, rounding=True)
    monkeypatch.setattr(hard, "log", lambda name, value, **kw: logged.__setitem__(name, value))
    module = hard
    validate(0, 0.5, 0.9)
    assert hard.best_entropy == pytest.approx(0.9) and hard.rounded_snapshot is None
    assert logged["val/entropy"] == pytest.approx(0.9)


# -----------------------------------------------------------------------------
# 5. Learning


def test_overfits_one_batch_of_anbn():
    """With R = 0 the only memory is the stacks: on a^2 b^2 a^2 b^2 ... (epoch 0: n = 2 only, fully
    deterministic), the training loss of one fixed window must fall far below its initial value."""
    torch.manual_seed(0)
    module = StackRNNModule(task="anbn", hidden_size=10, n_stacks=2, stack_size=20)
    batch, _ = first_window(batch_size=4, epoch=0, bptt=40)
    assert get_task("anbn").decode(batch["targets"][0, :8].tolist()) == "aabbaabb"
    opt = torch.optim.Adam(module.parameters(), lr=0.05)
    losses = []
    for step in range(200):
        module._state = None  # the same window from empty stacks every time
        loss = module.training_step(batch, step)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[0] > 20  # about 40 * ln 2 per stream at init
    assert losses[-1] < 0.1 * losses[0], losses[::20]


# -----------------------------------------------------------------------------
# 6-8. The harness: run_seed, resume, DDP


def test_runspec_fields():
    """RunSpec(paper, experiment, tier, seed, overrides, resume, progress, results_root, runs_root,
    invocation)."""
    fields = {f.name: f for f in dataclasses.fields(RunSpec)}
    assert list(fields) == [
        "paper",
        "experiment",
        "tier",
        "seed",
        "overrides",
        "resume",
        "progress",
        "results_root",
        "runs_root",
        "invocation",
    ]
    spec = RunSpec("stack_rnn", "stack_anbn", "smoke", seed=1, runs_root=Path("/x"))
    assert spec.overrides == [] and spec.resume is False and spec.progress is True
    assert spec.work_dir == Path("/x/stack_rnn/stack_anbn/smoke/seed1")


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """One smoke run (seed 1) shared by the record tests; returns (record, tmp folder)."""
    os.environ["WANDB_MODE"] = "disabled"
    root = tmp_path_factory.mktemp("smoke")
    deterministic = torch.are_deterministic_algorithms_enabled()
    seed_env = os.environ.get("PL_GLOBAL_SEED")
    try:
        spec = RunSpec(
            "stack_rnn", "stack_anbn", "smoke", seed=1, progress=False, results_root=root, runs_root=root
        )
        record = run_seed(spec)
    finally:
        torch.use_deterministic_algorithms(deterministic)
        if seed_env is None:
            os.environ.pop("PL_GLOBAL_SEED", None)
        else:
            os.environ["PL_GLOBAL_SEED"] = seed_env
    return record, root


@pytest.mark.slow
def test_smoke_run_writes_full_record(smoke_run):
    """run_seed writes results/<paper>/<exp>/<tier>/seed1.json with metrics, details and provenance."""
    record, root = smoke_run
    path = results.record_path("stack_rnn", "stack_anbn", "smoke", 1, root)
    assert json.loads(path.read_text()) == json.loads(json.dumps(record))
    assert record["status"] == "complete" and record["seed"] == 1 and record["epochs_trained"] == 2
    metrics = record["metrics"]
    for key in ["solved_pct", "solved_pct_rounding", "solved_pct60", "solved_pct60_rounding"]:
        assert 0.0 <= metrics[key] <= 100.0
    assert 0.0 < metrics["val_entropy"] < 20.0
    by_n = record["details"]["accuracy_by_n"]
    assert by_n["n"] == [2, 3, 4, 5, 6]  # smoke test_lengths [2, 6]
    for mode in ("soft", "rounding"):
        assert len(by_n[mode]) == 5 and all(0.0 <= a <= 1.0 for a in by_n[mode])
    solved = sum(a == 1.0 for a in by_n["rounding"])
    assert metrics["solved_pct_rounding"] == pytest.approx(100.0 * solved / 5)
    # Which sequences failed, per failing length, and the run's schedule: a claim can be read from the record.
    details = record["details"]
    for mode in ("soft", "rounding"):
        failing = {str(n) for n, a in zip(by_n["n"], by_n[mode], strict=True) if a < 1.0}
        assert set(details["wrong_sequences"][mode]) == failing
        assert all(0 <= i < 199 for ids in details["wrong_sequences"][mode].values() for i in ids)
    curve = details["val_curve"]
    assert [e["epoch"] for e in curve] == [0, 1] and all(e["lr"] > 0 for e in curve)
    best = min(curve, key=lambda e: e["val_entropy_soft"])
    assert details["best_epoch"] == best["epoch"]
    assert metrics["val_entropy"] == pytest.approx(best["val_entropy_soft"], rel=1e-6)
    assert details["best_epoch_rounding"] in (0, 1)
    assert record["config"]["data"]["init_args"]["batch_size"] == 4
    assert record["config"]["model"]["init_args"]["hidden_size"] == 40
    assert record["config"]["trainer"]["max_epochs"] == 2
    assert set(record["git"]) == {"sha", "dirty"}
    assert record["packages"]["torch"] == torch.__version__ and record["packages"]["lightning"]
    assert record["hardware"]["devices"] == 1 and record["hardware"]["accelerator"] == "cpu"
    assert record["wall_time_s"] > 0
    work = root / "stack_rnn" / "stack_anbn" / "smoke" / "seed1"
    ckpts = sorted(p.name for p in (work / "checkpoints").glob("*.ckpt"))
    assert ckpts == ["epoch000.ckpt", "epoch001.ckpt"]
    assert latest_checkpoint(work / "checkpoints").name in ckpts
    csv = (work / "csv" / "metrics.csv").read_text().splitlines()
    header = csv[0].split(",")
    assert {"epoch", "val/entropy", "val_entropy", "solved_pct_rounding"} <= set(header)
    assert len(csv) >= 3


@pytest.mark.slow
def test_checkpoint_keeps_lr_state_and_snapshot(smoke_run):
    """The checkpoint carries the LR rule's state (lr, best entropy, snapshot), so that resume can use it."""
    _, root = smoke_run
    ckpt = torch.load(
        root / "stack_rnn" / "stack_anbn" / "smoke" / "seed1" / "checkpoints" / "epoch001.ckpt",
        map_location="cpu",
        weights_only=False,
    )
    saved = ckpt["stack_rnn"]
    assert saved["lr"] == pytest.approx(0.1)
    assert math.isfinite(saved["best_entropy"])
    assert set(saved["snapshot"]) == {"embed", "stack_to_hidden", "readout"}


@pytest.mark.slow
def test_data_seed_follows_run_seed(smoke_run):
    """data.py: 'seed: run seed; the harness sets it to the seed of the run'."""
    record, _ = smoke_run
    assert record["config"]["data"]["init_args"]["seed"] == 1


def final_weights(root: Path) -> dict[str, torch.Tensor]:
    path = root / "stack_rnn" / "stack_anbn" / "smoke" / "seed1" / "checkpoints" / "epoch002.ckpt"
    return torch.load(path, map_location="cpu", weights_only=False)


@pytest.mark.slow
def test_nan_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(
    tmp_path, harness_state, monkeypatch, capsys
):
    """A NaN loss in epoch 1 stops the run: exit 2 with what to do, epoch 0's checkpoint kept, no record."""
    real_step = StackRNNModule.training_step

    def poisoned(self, batch, batch_idx):
        loss = real_step(self, batch, batch_idx)
        return loss * math.nan if self.current_epoch == 1 else loss

    monkeypatch.setattr(StackRNNModule, "training_step", poisoned)
    monkeypatch.setenv("REPRO_RESULTS", str(tmp_path / "results"))
    monkeypatch.setattr(results, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(repro_train, "RUNS", tmp_path / "runs")
    rc = repro_train.main(["stack_rnn", "stack_anbn", "smoke", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "loss became nan at epoch 1, batch 0" in err and "last good checkpoint is kept in" in err
    assert "--set trainer.gradient_clip_val=..." in err and "run it again without --resume" in err
    work = tmp_path / "runs" / "stack_rnn" / "stack_anbn" / "smoke" / "seed1"
    assert sorted(p.name for p in (work / "checkpoints").glob("*.ckpt")) == ["epoch000.ckpt"]
    assert latest_checkpoint(work / "checkpoints").name == "epoch000.ckpt"
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_nan_loss_in_the_first_epoch_says_there_is_no_checkpoint_yet(
    tmp_path, harness_state, monkeypatch, capsys
):
    real_step = StackRNNModule.training_step
    monkeypatch.setattr(StackRNNModule, "training_step", lambda *a: real_step(*a) * math.nan)
    monkeypatch.setattr(results, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(repro_train, "RUNS", tmp_path / "runs")
    rc = repro_train.main(["stack_rnn", "stack_anbn", "smoke", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "loss became nan at epoch 0, batch 0" in err
    assert "No checkpoint was written yet" in err and "checkpoint is kept" not in err


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["32-true", "64-true"])
def test_resume_equals_uninterrupted(tmp_path, harness_state, precision):
    """max_epochs=3 in one go == max_epochs=2 then --resume to 3: same weights, snapshot and metrics. At
    float64 (the cpu and full tiers' precision) this failed until the harness converted the module before
    Lightning loaded the checkpoint into it: the weights came back rounded to float32."""

    def run(root, epochs, resume=False):
        spec = RunSpec(
            "stack_rnn",
            "stack_anbn",
            "smoke",
            seed=1,
            overrides=[f"trainer.max_epochs={epochs}", f"trainer.precision={precision}"],
            resume=resume,
            progress=False,
            results_root=root,
            runs_root=root,
        )
        return run_seed(spec)

    straight = run(tmp_path / "a", 3)
    first = run(tmp_path / "b", 2)
    resumed = run(tmp_path / "b", 3, resume=True)
    assert first["resumed_from"] is None and straight["resumed_from"] is None
    assert resumed["resumed_from"] == "checkpoints/epoch001.ckpt"
    assert resumed["epochs_trained"] == straight["epochs_trained"] == 3
    a, b = final_weights(tmp_path / "a"), final_weights(tmp_path / "b")
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    for key in a["stack_rnn"]["snapshot"]:
        assert torch.equal(a["stack_rnn"]["snapshot"][key], b["stack_rnn"]["snapshot"][key]), key
    assert a["stack_rnn"]["lr"] == b["stack_rnn"]["lr"]
    assert resumed["metrics"]["val_entropy"] == straight["metrics"]["val_entropy"]
    assert resumed["details"]["accuracy_by_n"] == straight["details"]["accuracy_by_n"]
    assert resumed["metrics"] == straight["metrics"]
    # The CSV log of the resumed run continues the first part's: the same rows as one uninterrupted run.
    log = "stack_rnn/stack_anbn/smoke/seed1/csv/metrics.csv"
    assert (tmp_path / "b" / log).read_text() == (tmp_path / "a" / log).read_text()


@pytest.mark.slow
def test_ddp_two_cpu_processes(tmp_path, smoke_run):
    """2-process DDP on CPU exits 0, writes one record (rank 0) with devices == 2, and trains the same
    model as one process (each rank takes half of the global streams; DDP averages the gradients)."""
    env = {
        **os.environ,
        "REPRO_RESULTS": str(tmp_path / "results"),
        "REPRO_RUNS": str(tmp_path / "runs"),
        "WANDB_MODE": "disabled",
        "OMP_NUM_THREADS": "1",
    }
    cmd = [
        sys.executable,
        "-m",
        "repro.train",
        "stack_rnn",
        "stack_anbn",
        "smoke",
        "1",
        "--set",
        "trainer.devices=2",
        "--set",
        "trainer.strategy=ddp",
        "--set",
        "trainer.accelerator=cpu",
        "--no-progress",
    ]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = list((tmp_path / "results").rglob("*.json"))
    assert [p.relative_to(tmp_path / "results") for p in records] == [
        Path("stack_rnn/stack_anbn/smoke/seed1.json")
    ]
    record = json.loads(records[0].read_text())
    assert record["hardware"]["devices"] == 2
    assert record["config"]["trainer"]["strategy"] == "ddp"
    single, _ = smoke_run
    assert record["metrics"]["val_entropy"] == pytest.approx(single["metrics"]["val_entropy"], rel=1e-4)
    assert record["details"]["accuracy_by_n"]["n"] == single["details"]["accuracy_by_n"]["n"]


# -----------------------------------------------------------------------------
# 8-9. Data details (spec §2.4)


def rank_view(data, world, rank, epoch):
    data.trainer = SimpleNamespace(world_size=world, global_rank=rank, current_epoch=epoch)
    return data.train_batches(epoch)


def test_ddp_split_takes_every_world_size_th_stream():
    """Rank r of 2 gets global streams r, r+2, ... of the single-process batch (the same tensors)."""
    data = StackTaskData(task="anbn", batch_size=6, sequences_per_stream=15, seed=4)
    single = data.train_batches(3)
    assert single["inputs"].shape[0] == 6
    for rank in (0, 1):
        part = rank_view(data, 2, rank, 3)
        assert part.keys() == single.keys()
        for key in single:
            assert torch.equal(part[key], single[key][rank::2]), key
    bad = StackTaskData(task="anbn", batch_size=5, sequences_per_stream=15)
    with pytest.raises(ValueError, match="batch_size=5"):
        rank_view(bad, 2, 0, 0)


def sequence_starts(targets: torch.Tensor) -> list[int]:
    """a^n b^n: a sequence starts at every 'a' that follows a 'b' (or at position 0)."""
    t = targets.tolist()
    return [i for i in range(len(t)) if t[i] == 0 and (i == 0 or t[i - 1] == 1)]


def a_runs(targets: torch.Tensor) -> list[int]:
    """Lengths of the runs of 'a' (the n of every a^n b^n sequence), the last (maybe cut) one dropped."""
    runs, count = [], 0
    for c in targets.tolist():
        if c == 0:
            count += 1
        elif count:
            runs.append(count)
            count = 0
    return runs[:-1]


def test_resets_at_the_code_steps_epoch_start_and_every_reset_every_th_sequence():
    """The stacks are emptied where train_toy.cpp empties them (spec §2.4, §3). emptyStacks() before
    sequence iseq (iseq % nreset == 0) empties what the next forward step reads: the step that PREDICTS the
    sequence's first character, whose input is the previous sequence's last character. At an epoch start
    the code empties them again right after step 0 and makes no update for step 0, so the step that reads
    the first character sees empty stacks as well. Before this was fixed the suite emptied the stacks one
    step later (the step reading the first character) and trained on step 0: this test failed."""
    data = StackTaskData(task="anbn", batch_size=3, sequences_per_stream=20, reset_every=6, seed=2)
    batch = data.train_batches(4)
    length = batch["inputs"].shape[1]
    assert all(v.shape == (3, length) for v in batch.values())
    assert batch["resets"].dtype == torch.bool
    for row in range(3):
        targets = batch["targets"][row]
        assert torch.equal(batch["inputs"][row, 1:], targets[:-1])  # inputs[t] = targets[t-1]
        assert batch["inputs"][row, 0] == 1  # first input of a stream: the last letter
        starts = sequence_starts(targets)
        expected = {0, 1} | {starts[k] for k in range(6, len(starts), 6) if starts[k] < length}
        assert set(batch["resets"][row].nonzero().flatten().tolist()) == expected
        assert len(expected) >= 4
        for step in expected - {0, 1}:
            # the step predicting the first 'a' of the sequence, reading the last 'b' of the previous one
            assert batch["targets"][row, step] == 0 and batch["inputs"][row, step] == 1
        mask = batch["loss_mask"][row]
        assert mask[0] == 0 and torch.all(mask[1:] == 1)  # the epoch's first step makes no update


def test_validation_empties_the_stacks_once_and_scores_every_character():
    """Validation empties the stacks once, before its first step (train_toy.cpp has no second emptying
    there), and its entropy counts every character, step 0 included."""
    batch = StackTaskData(task="anbn", validation_sequences=40, seed=3).validation_batch(2)
    assert batch["resets"].nonzero().tolist() == [[0, 0]]
    assert torch.all(batch["loss_mask"] == 1)


def addition_sequences(targets: torch.Tensor) -> list[tuple[int, str]]:
    """Binary addition: (stream position of its first character, text) of every complete sequence; a
    sequence ends with its '.'."""
    text = get_task("addition").decode(targets.tolist())
    found, start = [], 0
    for end in [i for i, c in enumerate(text) if c == "."]:
        found.append((start, text[start : end + 1]))
        start = end + 1
    return found


def addition_total(sequence: str) -> int:
    """T of "A+B=S.": the operands' digits, an empty operand (written "0") counting 0."""
    operands = sequence.split("=")[0].split("+")
    return sum(0 if operand == "0" else len(operand) for operand in operands)


def test_addition_validation_empties_the_stacks_before_and_after_its_first_step():
    """train_add.cpp's validation empties the stacks before its first step and again right after it (as
    its training does at an epoch start); it scores the result digits and the '.', as training does."""
    data = StackTaskData(
        task="addition",
        validation_sequences=30,
        validation_nmin=20,
        validation_nmax=21,
        validation_empty_after_first_step=True,
        seed=3,
    )
    batch = data.validation_batch(2)
    assert batch["resets"].nonzero().tolist() == [[0, 0], [0, 1]]
    sequences = addition_sequences(batch["targets"][0])
    assert len(sequences) == 30 and {addition_total(text) for _, text in sequences} == {20}
    expected = torch.zeros_like(batch["loss_mask"][0])
    for start, text in sequences:
        expected[start + text.index("=") + 1 : start + len(text)] = 1
    assert torch.equal(batch["loss_mask"][0], expected)


@pytest.mark.parametrize("per_length", [25, 5])
def test_addition_test_stream_empties_the_stacks_where_train_adds_test_does(per_length):
    """train_add.cpp's test empties the stacks before sequence iseq when iseq % nreset == 0 (nreset 10), iseq
    counting from 0 in each n block: at the step that predicts the first character of sequences 0, 10,
    20, 0, 10, ... of the blocks (its input the previous sequence's '.'), like the training resets. With
    5 sequences per n only each block's first sequence is preceded by a reset. The toy tasks' test
    (train_toy.cpp) empties the stacks once, before its first step. Before test_reset_every existed the
    test stream had no resets: the stacks were emptied once."""
    data = StackTaskData(
        task="addition", test_lengths=(2, 4), test_per_length=per_length, test_reset_every=10, window=40
    )
    windows = list(data.test_dataloader())
    batch = {k: torch.cat([w[k] for w in windows], 1) for k in ("inputs", "targets", "resets")}
    sequences = addition_sequences(batch["targets"][0])
    assert len(sequences) == 3 * per_length
    assert [addition_total(text) for _, text in sequences] == np.repeat([2, 3, 4], per_length).tolist()
    emptied_before = [k for k in range(len(sequences)) if k % per_length % 10 == 0]
    assert emptied_before == ([0, 10, 20, 25, 35, 45, 50, 60, 70] if per_length == 25 else [0, 5, 10])
    steps = batch["resets"][0].nonzero().flatten().tolist()
    assert steps == [sequences[k][0] for k in emptied_before]
    dot = get_task("addition").symbols.index(".")
    assert all(batch["inputs"][0, step] == dot for step in steps[1:])

    toy = StackTaskData(task="anbn", test_lengths=(2, 4), test_per_length=25)
    (toy_batch,) = list(toy.test_dataloader())
    assert toy_batch["resets"].nonzero().tolist() == [[0, 0]]


def test_addition_trains_from_T_0_as_train_add():
    """train_add.cpp sets nmin = 0 in its epoch loop: epoch e trains on T in {0..max(min(e+3, N), 3) - 1},
    so epoch 0 draws T = 0, 1, 2 ("0+0=0." included); the toy tasks' nmin is 2."""

    def epoch_sequences(data, epoch):
        return [text for _, text in addition_sequences(data.train_batches(epoch)["targets"][0])]

    data = StackTaskData(task="addition", nmax=20, train_nmin=0, batch_size=1, sequences_per_stream=300)
    totals = {e: {addition_total(text) for text in epoch_sequences(data, e)} for e in (0, 4, 30)}
    assert totals == {0: {0, 1, 2}, 4: set(range(7)), 30: set(range(20))}
    assert "0+0=0." in epoch_sequences(data, 0)
    default = StackTaskData(task="addition", nmax=20, batch_size=1, sequences_per_stream=100)
    assert {addition_total(text) for text in epoch_sequences(default, 0)} == {2}


def test_loss_mask_all_ones_for_lm_and_scored_for_addition():
    """Unsupervised tasks train on every character but the epoch's first step (the code makes no update
    there); addition only on the result digits and the '.'."""
    lm = StackTaskData(task="anbncn", batch_size=2, sequences_per_stream=10).train_batches(2)
    expected = torch.ones_like(lm["loss_mask"])
    expected[:, 0] = 0
    assert lm["loss_mask"].dtype == torch.float32 and torch.equal(lm["loss_mask"], expected)
    add = StackTaskData(task="addition", batch_size=2, sequences_per_stream=10, seed=1).train_batches(5)
    task = get_task("addition")
    eq, dot = task.symbols.index("="), task.symbols.index(".")
    for row in range(2):
        expected, inside = [], False
        for c in add["targets"][row].tolist():
            expected.append(1.0 if inside else 0.0)
            if c == eq:
                inside = True
            elif c == dot:
                inside = False
        assert add["loss_mask"][row].tolist() == expected
    assert 0 < add["loss_mask"].sum() < add["loss_mask"].numel()


def test_epoch_data_differs_across_epochs_and_repeats_for_same_seed_and_epoch():
    """Each epoch has its own streams, reproducible from (seed, epoch): what resume relies on."""
    a = StackTaskData(task="anbn", batch_size=2, sequences_per_stream=30, seed=7)
    b = StackTaskData(task="anbn", batch_size=2, sequences_per_stream=30, seed=7)
    other = StackTaskData(task="anbn", batch_size=2, sequences_per_stream=30, seed=8)
    for epoch in (0, 5):
        x, y = a.train_batches(epoch), b.train_batches(epoch)
        assert all(torch.equal(x[k], y[k]) for k in x)
    assert not torch.equal(a.train_batches(5)["targets"][:, :100], a.train_batches(6)["targets"][:, :100])
    assert not torch.equal(a.train_batches(5)["targets"][:, :100], other.train_batches(5)["targets"][:, :100])
    assert not torch.equal(a.train_batches(5)["targets"][0, :100], a.train_batches(5)["targets"][1, :100])
    va, vb = a.validation_batch(3), b.validation_batch(3)
    assert torch.equal(va["targets"], vb["targets"])
    assert not torch.equal(va["targets"][:, :200], a.validation_batch(4)["targets"][:, :200])


def test_train_dataloader_serves_full_bptt_windows_of_the_fit_loops_epoch():
    """The loader serves the epoch the fit loop is processing (not ``current_epoch``, which lags on resume)
    as consecutive windows of exactly bptt characters."""
    data = StackTaskData(task="anbn", batch_size=2, sequences_per_stream=30, bptt=25, seed=3)
    progress = SimpleNamespace(current=SimpleNamespace(processed=6))
    data.trainer = SimpleNamespace(
        world_size=1, global_rank=0, current_epoch=5, fit_loop=SimpleNamespace(epoch_progress=progress)
    )
    full = data.train_batches(6)
    windows = list(data.train_dataloader())
    length = full["inputs"].shape[1]
    assert len(windows) == length // 25
    assert all(w["inputs"].shape == (2, 25) for w in windows)
    for key in full:
        assert torch.equal(torch.cat([w[key] for w in windows], 1), full[key][:, : 25 * len(windows)])


def test_curriculum_and_validation_lengths():
    """Epoch e trains on n in {2..min(e+2, N-1)}; validation uses n up to max(N, 20) - 1, beyond it."""
    data = StackTaskData(
        task="anbn", nmax=15, batch_size=2, sequences_per_stream=200, validation_sequences=400
    )
    assert set(a_runs(data.train_batches(0)["targets"][0])) == {2}
    assert set(a_runs(data.train_batches(3)["targets"][0])) == {2, 3, 4, 5}
    assert set(a_runs(data.train_batches(30)["targets"][0])) == set(range(2, 15))
    val = data.validation_batch(0)
    assert set(a_runs(val["targets"][0])) == set(range(2, 20))
    wide = StackTaskData(task="anbn", nmax=25, validation_sequences=600).validation_batch(1)
    assert max(a_runs(wide["targets"][0])) == 24 and min(a_runs(wide["targets"][0])) == 2


def test_test_stream_is_fixed_and_covers_configured_lengths():
    """The test stream uses the fixed test seed and n = first..last, per_length sequences each."""
    data = StackTaskData(task="anbn", test_lengths=(2, 6), test_per_length=5, seed=3)
    other = StackTaskData(task="anbn", test_lengths=(2, 6), test_per_length=5, seed=9)
    assert torch.equal(data.test_stream.targets, other.test_stream.targets)
    assert data.test_stream.lengths.tolist() == np.repeat(np.arange(2, 7), 5).tolist()
    (batch,) = list(data.test_dataloader())
    assert torch.equal(batch["inputs"][0], data.test_stream.inputs)


def test_bench_quick_reports_throughput_and_table2_wall_clock(tmp_path, monkeypatch):
    """``repro bench --quick``: throughput rows for each setting, and the Table 2 wall clock from the records'
    first start to last finish (seeds run two at a time, so it is less than the summed seed times)."""
    from papers.stack_rnn import bench

    monkeypatch.setattr(results, "RESULTS", tmp_path / "results")
    monkeypatch.delenv(bench.ORIGINAL_ENV, raising=False)
    for seed, (start, end) in enumerate([("10:00:00", "10:05:00"), ("10:00:30", "10:06:00")], start=1):
        record = {
            "seed": seed,
            "wall_time_s": 300.0,
            "epochs_trained": 20,
            "metrics": {"solved_pct_rounding": 100.0},
            "started_at": f"2026-11-25T{start}+00:00",
            "finished_at": f"2026-11-25T{end}+00:00",
        }
        results.write_json(results.record_path("stack_rnn", "stack_anbn", "cpu", seed), record)
    out = tmp_path / "results" / "bench" / "stack_rnn.json"
    report = bench.main(out, quick=True)
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    settings = [(1, "float64"), (16, "float64"), (16, "float32"), (32, "float64")]
    rows = [(row["implementation"], row["batch_size"], row["dtype"]) for row in report["training"]]
    assert rows == [("kernel", *s) for s in settings] + [("torch loop", *s) for s in settings]
    assert all(row["characters_per_s"] > 0 and row["windows_per_s"] > 0 for row in report["training"])
    assert report["kernel_speedup_at_cpu_tier"] > 0
    table2 = report["table2_cpu"]
    assert table2["wall_clock_s"] == 360.0
    assert table2["cells"]["stack_anbn"]["wall_time_s_per_seed"] == [300.0, 300.0]
    assert table2["cells"]["stack_anbn"]["reference_cpp_online_sgd_s"] == 480
    assert set(table2["cells"]) == {"stack_anbn"}
    # The full tier's online SGD, against the original C++: without STACK_RNN_ORIGINAL, the figure recorded
    # on this machine (bench.REFERENCE_CPP), and the report says so.
    online = report["online"]
    assert online["implementation"] == "online-sgd-kernel" and online["characters_per_cpu_s"] > 0
    assert online["original_cpp_characters_per_cpu_s"] == report["reference_cpp"]["characters_per_cpu_s"]
    assert online["original_cpp_source"].startswith("REFERENCE_CPP")
    assert online["speedup_over_original_cpp"] == pytest.approx(
        online["characters_per_cpu_s"] / online["original_cpp_characters_per_cpu_s"], rel=1e-2
    )
    assert [set(run) for run in online["rounds"]] == [{"kernel"}]
    assert report["table2_full"] == {"cells": {}, "wall_clock_s": None}


def test_bench_times_the_original_beside_the_kernel(tmp_path, monkeypatch):
    """With STACK_RNN_ORIGINAL set, every round times the original train_toy after the kernel, on as many
    characters: run with script_tasks.sh's flags and -nseq for that many characters, in a folder with the
    data/ it saves into, and stopped where its validation starts. Here a stand-in prints what train_toy
    prints and then waits to be stopped."""
    from papers.stack_rnn import bench

    seen = tmp_path / "seen"
    original = tmp_path / "train_toy"
    script = textwrap.dedent(
        """\
        import os, sys, time
        with open(SEEN, "a") as seen:
            seen.write(" ".join(sys.argv[1:]) + f" data={os.path.isdir('data')}\\n")
        print("seed: 1", flush=True)
        for it in range(0, 40, 4):
            print(f"\\r [train] lr: 0.10000 it={it:7d} nmax:3 ", end="")
        print("\\r [valid] lr: 0.10000 it=      0 nmax:20 ", end="", flush=True)
        time.sleep(600)
        """
    )
    original.write_text(f"#!{sys.executable}\n" + script.replace("SEEN", repr(str(seen))))
    original.chmod(0o755)
    monkeypatch.setenv(bench.ORIGINAL_ENV, str(original))
    online = bench.online_throughput(characters=40, rounds=2)
    flags = " ".join(bench.ORIGINAL_FLAGS)
    assert seen.read_text().splitlines() == [f"{flags} -nseq 10 data=True"] * 2
    assert [set(run) for run in online["rounds"]] == [{"kernel", "original_cpp", "speedup"}] * 2
    for run in online["rounds"]:
        # 10 sequences of 4 characters, the epoch's first character not trained, as the kernel's stream
        assert run["original_cpp"]["characters"] == run["kernel"]["characters"] == 39
        assert run["speedup"] == pytest.approx(
            run["kernel"]["characters_per_cpu_s"] / run["original_cpp"]["characters_per_cpu_s"], rel=1e-2
        )
    assert online["original_cpp_source"].endswith(f"{bench.ORIGINAL_ENV}={original}")
    assert online["speedup_over_original_cpp"] == pytest.approx(
        online["characters_per_cpu_s"] / online["original_cpp_characters_per_cpu_s"], rel=1e-2
    )


def test_table2_cells_select_seeds_by_their_rule(tmp_path):
    """Soft cells take the seed with the lowest val_entropy, '+ rounding' cells the lowest
    val_entropy_rounding; the -hard runs give their rounding cells; missing ones show a dash."""
    from papers.stack_rnn.figures import write_table2

    def commit(name, seeds):
        for seed, metrics in seeds.items():
            results.write_json(
                tmp_path / name / "cpu" / f"seed{seed}.json", {"seed": seed, "metrics": metrics}
            )
        results.write_json(
            tmp_path / name / "cpu" / "aggregate.json", {"records": [f"seed{s}.json" for s in seeds]}
        )

    commit(
        "stack_anbncn",
        {
            1: {
                "solved_pct60": 90.0,
                "solved_pct60_rounding": 100.0,
                "val_entropy": 0.1,
                "val_entropy_rounding": 0.5,
            },
            2: {
                "solved_pct60": 100.0,
                "solved_pct60_rounding": 50.0,
                "val_entropy": 0.2,
                "val_entropy_rounding": 0.3,
            },
        },
    )
    commit("stack_anbmcnm_rounding", {1: {"solved_pct60_rounding": 100.0, "val_entropy_rounding": 0.2}})
    commit("stack_anbn_rounding", {1: {"solved_pct60_rounding": 95.0, "val_entropy_rounding": 0.2}})
    commit("rnn_anbn", {1: {"solved_pct60": 25.0, "val_entropy": 0.3}})
    lines = write_table2(tmp_path, "cpu").read_text().splitlines()
    rows = {
        line.split(" | ")[0].lstrip("| "): line.split(" | ")[1:] for line in lines if line.startswith("| ")
    }
    assert rows["RNN"][0] == "25.0 (0/1) · paper 25"
    assert rows["Stack RNN 40+10"][1] == "90.0 (1/2) · paper 100"
    assert rows["Stack RNN 40+10 + rounding"][1] == "50.0 (1/2) · paper 100"
    assert rows["Stack RNN 40+10"][0] == "– · paper 100"
    assert rows["Stack RNN 40+10 + rounding"][0] == "95.0 (0/1) · paper 100"
    assert rows["Stack RNN 40+10 + rounding"][4] == "100.0 (1/1) · paper 100 |"
    assert rows["Stack RNN 40+10"][4] == "– · paper 43.3 |"
    assert rows["LSTM"][1] == "– · paper 100"


def test_test_rows_use_their_own_snapshots_across_windows():
    """Row 0 plays the soft snapshot with soft actions, row 1 the rounded snapshot with rounded actions, each
    carrying its own state from window to window; with one shared snapshot a single pass gives the same."""
    torch.manual_seed(0)
    module = StackRNNModule(task="anbn", hidden_size=8, n_stacks=3)
    stream = get_task("anbn").encode("aabb" * 3 + "aaabbb" * 4)
    inputs = torch.tensor([[1] + stream[:-1]])
    targets = torch.tensor([stream])
    resets = torch.zeros_like(inputs, dtype=torch.bool)
    resets[0, 0] = True  # a toy task's test empties the stacks once
    windows = [
        {"inputs": inputs[:, :13], "targets": targets[:, :13], "resets": resets[:, :13]},
        {"inputs": inputs[:, 13:], "targets": targets[:, 13:], "resets": resets[:, 13:]},
    ]
    module.snapshot = weights(module)
    perturb(module)
    module.rounded_snapshot = weights(module)
    module.core.load_state_dict(module.snapshot)

    def play():
        module.on_test_epoch_start()
        for i, window in enumerate(windows):
            module.test_step(window, i)
        return torch.cat(module._test_correct, 1)

    with torch.no_grad():
        correct = play()
        soft, _, _ = module.core(inputs, module.core.initial_state(1))
        twin = StackRNNModule(task="anbn", hidden_size=8, n_stacks=3)
        twin.core.load_state_dict(module.rounded_snapshot)
        rounded, _, _ = twin.core(inputs, twin.core.initial_state(1), hard=True)
        assert torch.equal(correct[0], soft.argmax(-1)[0] == targets[0])
        assert torch.equal(correct[1], rounded.argmax(-1)[0] == targets[0])
        module.rounded_snapshot = module.snapshot
        shared = play()
        ref, _, _ = module.core(
            inputs.expand(2, -1), module.core.initial_state(2), hard=torch.tensor([False, True])
        )
        assert torch.equal(shared, ref.argmax(-1) == targets)


@pytest.mark.parametrize("own_rounded_snapshot", [False, True])
def test_test_predictions_after_a_reset_equal_those_of_freshly_emptied_stacks(own_rounded_snapshot):
    """Where the test stream empties the stacks (train_add.cpp: before sequences 0, 10, 20, ... of an n
    block), both rows of test_step (soft, and rounded on its own snapshot or the shared one) predict
    exactly what a model started on empty stacks at that step predicts, across window boundaries; without
    the reset the predictions differ. Before test_step passed the resets on, it ignored them: this failed."""
    torch.manual_seed(0)
    module = StackRNNModule(task="addition", hidden_size=8, n_stacks=3, stack_size=40, noop=True)
    stream = test_stream(get_task("addition"), [3], per_length=30)
    starts = stream.starts.tolist()
    resets = torch.zeros(len(stream), dtype=torch.bool)
    resets[[starts[0], starts[10], starts[20]]] = True  # written out here, independent of data.py
    window = 37
    windows = [
        {
            "inputs": stream.inputs[None, i : i + window],
            "targets": stream.targets[None, i : i + window],
            "resets": resets[None, i : i + window],
        }
        for i in range(0, len(stream), window)
    ]
    assert any(w["resets"][0, 1:].any() for w in windows)  # a reset inside a window, not at its edge
    module.snapshot = weights(module)
    if own_rounded_snapshot:
        perturb(module)
        module.rounded_snapshot = weights(module)
        module.core.load_state_dict(module.snapshot)
    else:
        module.rounded_snapshot = module.snapshot
    calls = []
    module.core.register_forward_hook(lambda core, args, out: calls.append(out[0]))
    with torch.no_grad():
        module.on_test_epoch_start()
        played = []
        for i, batch in enumerate(windows):
            calls.clear()
            module.test_step(batch, i)
            played.append(torch.cat(calls))  # [2, window, V]: row 0 soft, row 1 rounded
        played = torch.cat(played, 1)
        twin = StackRNNModule(task="addition", hidden_size=8, n_stacks=3, stack_size=40, noop=True)
        twin.core.load_state_dict(module.rounded_snapshot)

        def fresh(start, stop):
            """Both rows from freshly emptied stacks at ``start`` (no reset inside [start, stop))."""
            soft, _, _ = module.core(stream.inputs[None, start:stop], module.core.initial_state(1))
            rounded, _, _ = twin.core(stream.inputs[None, start:stop], twin.core.initial_state(1), hard=True)
            return torch.cat([soft, rounded])

        for first, after_last in ((10, 20), (20, 30)):
            start, stop = starts[first], starts[after_last] if after_last < 30 else len(stream)
            torch.testing.assert_close(played[:, start:stop], fresh(start, stop), **EXACT)
        carried, _, _ = module.core(stream.inputs[None], module.core.initial_state(1))
        assert not torch.allclose(carried[0, starts[10] : starts[20]], played[0, starts[10] : starts[20]])


@pytest.mark.slow
def test_trace_draws_what_the_stacks_do_from_a_checkpoint(smoke_run, tmp_path):
    """The Table 3 view: one a^n b^n sequence (n = 6) plus the next 'a', its push probabilities (one-hot
    with rounding) and top-of-stack values, drawn to a PNG."""
    from papers.stack_rnn import trace

    _, root = smoke_run
    run_dir = root / "stack_rnn" / "stack_anbn" / "smoke" / "seed1"
    module = trace.load_module(run_dir, rounding=True)
    steps = trace.trace(module, n=6, rounding=True)
    assert steps["targets"] == "aaaaaabbbbbba"
    assert steps["inputs"][1:] == steps["targets"][:-1]
    assert steps["push"].shape == steps["top"].shape == (10, 13)
    assert set(np.unique(steps["push"])) <= {0.0, 1.0}
    assert ((steps["top"] >= -1) & (steps["top"] <= 1)).all()
    # Scored (spec §2.3): the first 'a' (credited to the warm-up sequence before), the b's after the first
    # one, and the next sequence's first 'a'.
    assert [i for i, s in enumerate(steps["scored"]) if s] == [0, *range(7, 13)]
    out = trace.main([str(run_dir), "--n", "6", "--out", str(tmp_path / "trace.png")])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
