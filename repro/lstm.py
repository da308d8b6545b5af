"""One configurable LSTM layer for the papers that change the inside of an LSTM: the vanilla LSTM of Greff
et al. ("LSTM: A Search Space Odyssey", 2015) and its eight variants, and the depth-gated LSTM of Yao et al.
(2015).

Vanilla (Greff et al. §II; specs/lstm_odyssey.md §3), N blocks, input x_t, output y_t, diagonal peepholes p:

    z_t = g(W_z x_t + R_z y_{t-1} + b_z)                       block input
    i_t = σ(W_i x_t + R_i y_{t-1} + p_i ⊙ c_{t-1} + b_i)       input gate
    f_t = σ(W_f x_t + R_f y_{t-1} + p_f ⊙ c_{t-1} + b_f)       forget gate
    c_t = z_t ⊙ i_t + c_{t-1} ⊙ f_t                            cell
    o_t = σ(W_o x_t + R_o y_{t-1} + p_o ⊙ c_t + b_o)           output gate: its peephole sees the NEW cell
    y_t = h(c_t) ⊙ o_t                                         block output; g = h = tanh

The variants, each one switch of ``LSTMVariant`` (``VARIANTS`` names them as the paper does):
    NIG  i_t = 1                 NFG  f_t = 1                 NOG  o_t = 1
    NIAF g(x) = x                NOAF h(x) = x                NP   no peepholes
    CIFG f_t = 1 - i_t           FGR  every gate also sees all three gates of step t-1: nine N×N matrices,
                                      ī_t += R_ii i_{t-1} + R_fi f_{t-1} + R_oi o_{t-1} (and so for f, o)

Depth gate (Yao et al.; specs/depth_gated_lstm.md §3.2, the official code's form): layer ℓ also reads a "lower
cell" l_t, the cell of layer ℓ-1 at the same step (at layer 0, a projection W_l x_t of the layer's raw input):

    d_t = σ(W_d x_t + w_qd ⊙ c_{t-1} + [ℓ>0] w_ld ⊙ c^{ℓ-1}_t + b_d)     w_qd, w_ld: vectors
    c_t = f_t ⊙ c_{t-1} + i_t ⊙ z_t + d_t ⊙ l_t

with, as in that code, full N×N peepholes (``peepholes="full"``), a coupled forget gate (CIFG) and a learned
scalar "self-stabiliser" that scales the layer's input by exp(s) (s starts at 0). The paper's form keeps a
separate forget gate: ``forget_gate="on"``.

With peepholes off and every gate on, the layer is ``torch.nn.LSTM`` (``copy_from_torch`` maps the weights).

Speed: the input projections of all steps are one matrix product before the time loop, and each step's
recurrent projections one more. The loop, forward and backward, is TorchScript run without autograd: the
backward (``_backward_scan``, the chain rule of the equations above, checked against autograd in the tests)
carries only what flows along the sequence and takes the weights' gradients as one product over all steps.
``repro bench lstm`` (repro/lstm_bench.py) measures it against ``torch.nn.LSTM``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import nn

FORGET = ("on", "off", "coupled")
ACTIVATIONS = ("tanh", "identity")
PEEPHOLES = ("none", "diagonal", "full")


@dataclass(frozen=True)
class LSTMVariant:
    input_gate: bool = True
    forget_gate: str = "on"  # on | off (f = 1) | coupled (f = 1 - i)
    output_gate: bool = True
    input_act: str = "tanh"  # g
    output_act: str = "tanh"  # h
    peepholes: str = "diagonal"  # none | diagonal (Greff) | full N×N matrices (Yao's code)
    full_gate_recurrence: bool = False
    depth_gate: bool = False
    stabiliser: bool = False

    def __post_init__(self):
        for name, value, allowed in (
            ("forget_gate", self.forget_gate, FORGET),
            ("input_act", self.input_act, ACTIVATIONS),
            ("output_act", self.output_act, ACTIVATIONS),
            ("peepholes", self.peepholes, PEEPHOLES),
        ):
            if value not in allowed:
                raise ValueError(f"LSTMVariant.{name} must be one of {', '.join(allowed)}, not {value!r}")
        if self.forget_gate == "coupled" and not self.input_gate:
            raise ValueError("a coupled forget gate (f = 1 - i) needs the input gate")
        if self.full_gate_recurrence and not (
            self.input_gate and self.forget_gate == "on" and self.output_gate
        ):
            raise ValueError(
                "full gate recurrence connects the input, forget and output gates: all must be on"
            )


VANILLA = LSTMVariant()
VARIANTS: dict[str, LSTMVariant] = {
    "vanilla": VANILLA,
    "NIG": replace(VANILLA, input_gate=False),
    "NFG": replace(VANILLA, forget_gate="off"),
    "NOG": replace(VANILLA, output_gate=False),
    "NIAF": replace(VANILLA, input_act="identity"),
    "NOAF": replace(VANILLA, output_act="identity"),
    "NP": replace(VANILLA, peepholes="none"),
    "CIFG": replace(VANILLA, forget_gate="coupled"),
    "FGR": replace(VANILLA, full_gate_recurrence=True),
    # torch.nn.LSTM: no peepholes (the parity tests' configuration)
    "standard": replace(VANILLA, peepholes="none"),
    # Yao et al.'s official code: coupled gates, full peepholes, depth gate and self-stabiliser
    "dglstm": replace(VANILLA, forget_gate="coupled", peepholes="full", depth_gate=True, stabiliser=True),
}


def variant(name: str) -> LSTMVariant:
    if name not in VARIANTS:
        raise ValueError(f"unknown LSTM variant {name!r}. Valid: {', '.join(VARIANTS)}")
    return VARIANTS[name]


class LSTMLayer(nn.Module):
    """One configurable LSTM layer over a whole sequence (time-major: ``T × B × I``).

    Gate blocks, in this order, in ``weight_x`` (input), ``weight_r`` (recurrent) and ``bias``: z, then i, f,
    o where present; the depth gate d comes last in ``weight_x`` and ``bias`` and has no recurrent weights.
    """

    def __init__(
        self, input_size: int, hidden_size: int, config: LSTMVariant | str = "vanilla", lower: bool = False
    ):
        """``lower``: for a depth-gated layer above the first, the lower layer's cell is its lower cell (and
        the depth gate sees it); otherwise a depth-gated layer projects its raw input to one."""
        super().__init__()
        self.config = variant(config) if isinstance(config, str) else config
        cfg, n = self.config, hidden_size
        self.input_size, self.hidden_size, self.lower = input_size, hidden_size, lower
        self.gates = ["z"] + [
            g
            for g, on in (("i", cfg.input_gate), ("f", cfg.forget_gate == "on"), ("o", cfg.output_gate))
            if on
        ]
        recurrent = len(self.gates)
        projected = recurrent + (1 if cfg.depth_gate else 0)
        self.weight_x = nn.Parameter(torch.empty(projected * n, input_size))
        self.weight_r = nn.Parameter(torch.empty(recurrent * n, n))
        self.bias = nn.Parameter(torch.empty(projected * n))
        # Peepholes: i and f see c_{t-1}, o sees c_t; a depth gate's w_qd is its peephole on c_{t-1}.
        peeped = [g for g in ("i", "f", "o") if g in self.gates] + (["d"] if cfg.depth_gate else [])
        self.peephole = nn.ParameterDict()
        for gate in peeped:
            if gate == "d" or cfg.peepholes == "diagonal":
                self.peephole[gate] = nn.Parameter(torch.empty(n))
            elif cfg.peepholes == "full":
                self.peephole[gate] = nn.Parameter(torch.empty(n, n))
        self.weight_gates = nn.Parameter(torch.empty(3 * n, 3 * n)) if cfg.full_gate_recurrence else None
        if cfg.depth_gate:
            self.weight_lower = None if lower else nn.Parameter(torch.empty(n, input_size))
            self.depth_lower = nn.Parameter(torch.empty(n)) if lower else None  # w_ld
        self.stabiliser = nn.Parameter(torch.zeros(())) if cfg.stabiliser else None
        self.reset_parameters()

    def reset_parameters(self, scale: float | None = None) -> None:
        """Uniform in ±scale (default 1/√N, as torch.nn.LSTM); the stabiliser starts at 0."""
        scale = 1.0 / math.sqrt(self.hidden_size) if scale is None else scale
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name != "stabiliser":
                    p.uniform_(-scale, scale)

    def forward(
        self,
        x: torch.Tensor,
        state: tuple[torch.Tensor, ...] | None = None,
        lower_cells: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]]:
        """Outputs y (``T × B × N``), cells c (``T × B × N``, the next depth-gated layer's lower cells) and
        the final state: (y, c), and with full gate recurrence (y, c, [i f o]) since the next step reads the
        last step's gates. ``state``: such a state to start from (zeros when None; an FGR state without its
        gates starts them at zero). ``lower_cells``: the lower layer's cells (a depth-gated layer with
        lower=True)."""
        ys, cs, gates = _Scan.apply(self.flags(), *self.scan_inputs(x, state, lower_cells))
        if self.weight_gates is not None:
            return ys, cs, (ys[-1], cs[-1], gates)
        return ys, cs, (ys[-1], cs[-1])

    @torch.no_grad()
    def trace(self, x: torch.Tensor, state=None, lower_cells=None) -> dict[str, torch.Tensor]:
        """Every step's y, c, z, gates i, f, o, d and h(c) (``T × B × N``; what a variant lacks is absent)."""
        values = _forward_scan(*self.scan_inputs(x, state, lower_cells), self.flags())
        names = ("y", "c", "z", "i", "f", "o", "d", "h")
        return {k: v for k, v in zip(names, values, strict=True) if v.numel()}

    def flags(self) -> list[int]:
        cfg = self.config
        return [
            int(cfg.input_gate),
            FORGET.index(cfg.forget_gate),
            int(cfg.output_gate),
            int(cfg.input_act == "tanh"),
            int(cfg.output_act == "tanh"),
            int(cfg.depth_gate),
        ]

    def scan_inputs(self, x, state, lower_cells) -> list[torch.Tensor]:
        """The time loop's inputs: every step's input projections W x_t + b at once, the initial state, the
        recurrent, peephole and gate-recurrence weights, and the lower cells (empty tensors where absent)."""
        cfg, n = self.config, self.hidden_size
        steps, batch = x.shape[:2]
        if (lower_cells is not None) != (cfg.depth_gate and self.lower):
            raise ValueError(
                "lower_cells is needed by, and only by, a depth-gated layer built with lower=True"
            )
        if state is None:
            zeros = x.new_zeros(batch, n)
            state = (zeros, zeros)
        fgr = self.weight_gates is not None
        if len(state) not in ((2, 3) if fgr else (2,)):
            raise ValueError(
                f"a state is (y, c){' or (y, c, gates)' if fgr else ''}; got {len(state)} tensors"
            )
        gates0 = x.new_empty(0)
        if fgr:
            gates0 = state[2] if len(state) == 3 else x.new_zeros(batch, 3 * n)
        inputs = x * self.stabiliser.exp() if self.stabiliser is not None else x
        flat = inputs.reshape(steps * batch, -1)
        projected = torch.addmm(self.bias, flat, self.weight_x.T).view(steps, batch, -1)
        lower = lower_cells
        if cfg.depth_gate and not self.lower:  # layer 0: a projection of the raw (not stabilised) input
            lower = (x.reshape(steps * batch, -1) @ self.weight_lower.T).view(steps, batch, n)
        empty = x.new_empty(0)
        return [
            projected,
            self.weight_r,
            state[0],
            state[1],
            *(self.peephole.get(g, empty) for g in ("i", "f", "o", "d")),
            self.weight_gates if self.weight_gates is not None else empty,
            gates0,
            lower if lower is not None else empty,
            self.depth_lower if cfg.depth_gate and self.lower else empty,
        ]


@torch.jit.script
def _tanh_into(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """tanh(x) = 2σ(2x) − 1 written into ``out``: on the CPU, PyTorch's sigmoid kernel is several times
    faster than its tanh."""
    torch.mul(x, 2.0, out=out)
    return out.sigmoid_().mul_(2.0).sub_(1.0)


@torch.jit.script
def _sequence(like: torch.Tensor, steps: int, present: bool) -> torch.Tensor:
    """An uninitialised ``steps × like.shape`` tensor for one value of every step, or an empty one."""
    if present:
        return like.new_empty([steps] + like.shape)
    return like.new_empty(0)


@torch.jit.script
def _peep(pre: torch.Tensor, c: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """A gate's pre-activation plus its peephole term: p ⊙ c (diagonal), c Pᵀ (full), nothing (p empty)."""
    if p.numel() == 0:
        return pre
    if p.dim() == 1:
        return torch.addcmul(pre, p, c)
    return torch.addmm(pre, c, p.t())


@torch.jit.script
def _peep_grad(d_pre: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """What a peephole term sends back to the cell it reads, given its gate's pre-activation gradient."""
    if p.dim() == 1:
        return d_pre * p
    return d_pre @ p


@torch.jit.script
def _param_grad(d_pre: torch.Tensor, c: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """A peephole's gradient over all steps: Σ d_pre ⊙ c (diagonal) or Σ d_preᵀ c (full); empty if absent."""
    if p.numel() == 0:
        return p
    if p.dim() == 1:
        return (d_pre * c).sum((0, 1))
    return d_pre.flatten(0, 1).t() @ c.flatten(0, 1)


@torch.jit.script
def _forward_scan(
    projected: torch.Tensor,
    weight_r: torch.Tensor,
    y0: torch.Tensor,
    c0: torch.Tensor,
    p_i: torch.Tensor,
    p_f: torch.Tensor,
    p_o: torch.Tensor,
    p_d: torch.Tensor,
    weight_gates: torch.Tensor,
    gates0: torch.Tensor,
    lower: torch.Tensor,
    depth_lower: torch.Tensor,
    flags: list[int],
) -> list[torch.Tensor]:
    """The time loop of the module docstring's equations, without autograd; ``projected`` holds W x_t + b of
    every step. Returns y, c, z, the gates i, f, o, d and h(c) of every step (``T × B × N``; an absent gate,
    and h when h is the identity, is empty).
    flags: input gate, forget gate (0 on, 1 off, 2 coupled), output gate, tanh g, tanh h, depth gate."""
    input_gate, forget, output_gate = flags[0] == 1, flags[1], flags[2] == 1
    input_tanh, output_tanh, depth_gate = flags[3] == 1, flags[4] == 1, flags[5] == 1
    n = y0.shape[1]
    recurrent = weight_r.shape[0]
    fgr = weight_gates.numel() > 0
    empty = y0.new_empty(0)
    y, c = y0, c0
    gates_prev = gates0
    steps = projected.shape[0]
    # Every step writes its values straight into these sequence tensors (out=, through per-step views made
    # once by unbind): stacking per-step lists afterwards copied everything a second time.
    ys, cs, zs = _sequence(y0, steps, True), _sequence(y0, steps, True), _sequence(y0, steps, True)
    is_, fs = _sequence(y0, steps, input_gate), _sequence(y0, steps, forget != 1)
    os_, ds = _sequence(y0, steps, output_gate), _sequence(y0, steps, depth_gate)
    hs = _sequence(y0, steps, output_tanh)
    y_rows, c_rows, z_rows, h_rows = ys.unbind(0), cs.unbind(0), zs.unbind(0), hs.unbind(0)
    i_rows, f_rows, o_rows, d_rows = is_.unbind(0), fs.unbind(0), os_.unbind(0), ds.unbind(0)
    pre_rows, lower_rows = projected.unbind(0), lower.unbind(0)
    for t in range(steps):
        pre = pre_rows[t]
        rec = torch.addmm(pre[:, :recurrent], y, weight_r.t())
        if fgr:
            rec = torch.cat([rec[:, :n], torch.addmm(rec[:, n:], gates_prev, weight_gates.t())], 1)
        z = z_rows[t]
        if input_tanh:
            _tanh_into(rec[:, :n], z)
        else:
            z.copy_(rec[:, :n])
        k = n
        i = empty
        if input_gate:
            i = torch.sigmoid(_peep(rec[:, k : k + n], c, p_i), out=i_rows[t])
            k += n
        f = empty
        if forget == 0:
            f = torch.sigmoid(_peep(rec[:, k : k + n], c, p_f), out=f_rows[t])
            k += n
        elif forget == 2:
            f = torch.mul(i, -1.0, out=f_rows[t]).add_(1.0)
        c_new = c_rows[t]
        if input_gate:
            torch.mul(i, z, out=c_new)
        else:
            c_new.copy_(z)
        if forget == 1:
            c_new.add_(c)
        else:
            c_new.addcmul_(f, c)
        d = empty
        if depth_gate:
            d_pre = _peep(pre[:, recurrent:], c, p_d)
            if depth_lower.numel() > 0:
                d_pre = torch.addcmul(d_pre, depth_lower, lower_rows[t])
            d = torch.sigmoid(d_pre, out=d_rows[t])
            c_new.addcmul_(d, lower_rows[t])
        h = c_new
        if output_tanh:
            h = _tanh_into(c_new, h_rows[t])
        o = empty
        y = y_rows[t]
        if output_gate:
            o = torch.sigmoid(_peep(rec[:, k : k + n], c_new, p_o), out=o_rows[t])
            torch.mul(o, h, out=y)
        else:
            y.copy_(h)
        if fgr:
            gates_prev = torch.cat([i, f, o], 1)
        c = c_new
    return [ys, cs, zs, is_, fs, os_, ds, hs]


@torch.jit.script
def _backward_scan(
    d_ys: torch.Tensor,
    d_cs: torch.Tensor,
    ys: torch.Tensor,
    cs: torch.Tensor,
    zs: torch.Tensor,
    is_: torch.Tensor,
    fs: torch.Tensor,
    os_: torch.Tensor,
    ds: torch.Tensor,
    hs: torch.Tensor,
    y0: torch.Tensor,
    c0: torch.Tensor,
    weight_r: torch.Tensor,
    p_i: torch.Tensor,
    p_f: torch.Tensor,
    p_o: torch.Tensor,
    p_d: torch.Tensor,
    weight_gates: torch.Tensor,
    gates0: torch.Tensor,
    d_gates_last: torch.Tensor,
    lower: torch.Tensor,
    depth_lower: torch.Tensor,
    flags: list[int],
) -> list[torch.Tensor]:
    """Gradients of ``_forward_scan``, step by step backwards through time for what flows along the sequence
    (y, c, and with full gate recurrence the gates); the weights' gradients are one product over all steps
    at the end. Returns d projected, d weight_r, d y0, d c0, d p_i, d p_f, d p_o, d p_d, d weight_gates,
    d gates0, d lower, d depth_lower (empty where the forward's input was)."""
    input_gate, forget, output_gate = flags[0] == 1, flags[1], flags[2] == 1
    input_tanh, output_tanh, depth_gate = flags[3] == 1, flags[4] == 1, flags[5] == 1
    steps = ys.shape[0]
    n = y0.shape[1]
    recurrent = weight_r.shape[0]
    fgr = weight_gates.numel() > 0
    empty = y0.new_empty(0)
    d_y_next = torch.zeros_like(y0)  # from step t+1's recurrent products
    d_c_next = torch.zeros_like(c0)  # from step t+1's cell update and peepholes
    d_gates_next = d_gates_last  # from step t+1's full gate recurrence (the final gates' own gradient)
    # Each step's gradients go straight into the sequence tensors, as in the forward.
    d_projected = y0.new_empty(steps, y0.shape[0], recurrent + (n if depth_gate else 0))
    d_lower = _sequence(y0, steps, depth_gate)
    d_pre_rows, d_low_rows = d_projected.unbind(0), d_lower.unbind(0)
    d_y_rows, d_c_rows = d_ys.unbind(0), d_cs.unbind(0)
    c_rows, z_rows, h_rows = cs.unbind(0), zs.unbind(0), hs.unbind(0)
    i_rows, f_rows, o_rows, d_rows = is_.unbind(0), fs.unbind(0), os_.unbind(0), ds.unbind(0)
    lower_rows = lower.unbind(0)
    for t in range(steps - 1, -1, -1):
        c_prev = c_rows[t - 1] if t > 0 else c0
        c = c_rows[t]
        z = z_rows[t]
        h = h_rows[t] if output_tanh else c
        d_y = d_y_rows[t] + d_y_next
        d_c = d_c_rows[t] + d_c_next
        parts = []
        if output_gate:
            o = o_rows[t]
            d_o = d_y * h
            if fgr:
                d_o = d_o + d_gates_next[:, 2 * n :]
            d_o_pre = torch.ops.aten.sigmoid_backward(d_o, o)
            d_h = d_y * o
            if p_o.numel() > 0:
                d_c = d_c + _peep_grad(d_o_pre, p_o)
        else:
            d_o_pre = empty
            d_h = d_y
        d_c = d_c + (torch.ops.aten.tanh_backward(d_h, h) if output_tanh else d_h)
        d_c_prev = d_c if forget == 1 else d_c * f_rows[t]
        if depth_gate:
            d = d_rows[t]
            low = lower_rows[t]
            d_d_pre = torch.ops.aten.sigmoid_backward(d_c * low, d)
            if p_d.numel() > 0:
                d_c_prev = d_c_prev + _peep_grad(d_d_pre, p_d)
            d_low = torch.mul(d_c, d, out=d_low_rows[t])
            if depth_lower.numel() > 0:
                d_low.addcmul_(d_d_pre, depth_lower)
        else:
            d_d_pre = empty
        d_z = d_c * i_rows[t] if input_gate else d_c
        d_z_pre = torch.ops.aten.tanh_backward(d_z, z) if input_tanh else d_z
        parts.append(d_z_pre)
        if input_gate:
            i = i_rows[t]
            d_i = d_c * z
            if forget == 2:
                d_i = d_i - d_c * c_prev
            if fgr:
                d_i = d_i + d_gates_next[:, :n]
            d_i_pre = torch.ops.aten.sigmoid_backward(d_i, i)
            if p_i.numel() > 0:
                d_c_prev = d_c_prev + _peep_grad(d_i_pre, p_i)
            parts.append(d_i_pre)
        if forget == 0:
            f = f_rows[t]
            d_f = d_c * c_prev
            if fgr:
                d_f = d_f + d_gates_next[:, n : 2 * n]
            d_f_pre = torch.ops.aten.sigmoid_backward(d_f, f)
            if p_f.numel() > 0:
                d_c_prev = d_c_prev + _peep_grad(d_f_pre, p_f)
            parts.append(d_f_pre)
        if output_gate:
            parts.append(d_o_pre)
        if depth_gate:
            parts.append(d_d_pre)
        d_pre = torch.cat(parts, 1, out=d_pre_rows[t])
        d_rec = d_pre[:, :recurrent]
        if fgr:
            d_gates_next = d_rec[:, n:] @ weight_gates
        d_y_next = d_rec @ weight_r
        d_c_next = d_c_prev
    y_prev = torch.cat([y0.unsqueeze(0), ys[:-1]])
    c_prev_all = torch.cat([c0.unsqueeze(0), cs[:-1]])
    d_rec_all = d_projected[:, :, :recurrent]
    d_weight_r = d_rec_all.flatten(0, 1).t() @ y_prev.flatten(0, 1)
    k = n
    d_p_i, d_p_f, d_p_o = empty, empty, empty
    if input_gate:
        d_p_i = _param_grad(d_projected[:, :, k : k + n], c_prev_all, p_i)
        k += n
    if forget == 0:
        d_p_f = _param_grad(d_projected[:, :, k : k + n], c_prev_all, p_f)
        k += n
    if output_gate:
        d_p_o = _param_grad(d_projected[:, :, k : k + n], cs, p_o)
    d_weight_gates = empty
    if fgr:
        gates = torch.cat([is_, fs, os_], 2)
        gates_prev = torch.cat([gates0.unsqueeze(0), gates[:-1]])
        d_weight_gates = d_rec_all[:, :, n:].flatten(0, 1).t() @ gates_prev.flatten(0, 1)
    d_p_d, d_depth_lower = empty, empty
    if depth_gate:
        d_d_pre_all = d_projected[:, :, recurrent:]
        d_p_d = _param_grad(d_d_pre_all, c_prev_all, p_d)
        if depth_lower.numel() > 0:
            d_depth_lower = (d_d_pre_all * lower).sum((0, 1))
    return [
        d_projected,
        d_weight_r,
        d_y_next,
        d_c_next,
        d_p_i,
        d_p_f,
        d_p_o,
        d_p_d,
        d_weight_gates,
        d_gates_next if fgr else empty,
        d_lower,
        d_depth_lower,
    ]


class _Scan(torch.autograd.Function):
    """The time loop with a hand-written backward: autograd through every step's small operations costs more
    than the steps themselves; here the weights' gradients are one matrix product over all steps."""

    @staticmethod
    def forward(
        ctx, flags, projected, weight_r, y0, c0, p_i, p_f, p_o, p_d, weight_gates, gates0, lower, depth_lower
    ):
        ys, cs, zs, is_, fs, os_, ds, hs = _forward_scan(
            projected, weight_r, y0, c0, p_i, p_f, p_o, p_d, weight_gates, gates0, lower, depth_lower, flags
        )
        ctx.flags = flags
        ctx.save_for_backward(
            ys,
            cs,
            zs,
            is_,
            fs,
            os_,
            ds,
            hs,
            y0,
            c0,
            weight_r,
            p_i,
            p_f,
            p_o,
            p_d,
            weight_gates,
            gates0,
            lower,
            depth_lower,
        )
        # The last step's gates, the state an FGR layer hands to its next call.
        gates = torch.cat([is_[-1], fs[-1], os_[-1]], 1) if weight_gates.numel() else y0.new_empty(0)
        return ys, cs, gates

    @staticmethod
    def backward(ctx, d_ys, d_cs, d_gates):
        saved = ctx.saved_tensors
        ys, cs, gates0 = saved[0], saved[1], saved[16]
        d_ys = torch.zeros_like(ys) if d_ys is None else d_ys.contiguous()
        d_cs = torch.zeros_like(cs) if d_cs is None else d_cs.contiguous()
        if d_gates is None or not gates0.numel():
            d_gates = torch.zeros_like(gates0)
        grads = _backward_scan(d_ys, d_cs, *saved[:17], d_gates, *saved[17:], ctx.flags)
        return None, *(g if g.numel() else None for g in grads)


class LSTM(nn.Module):
    """A stack of ``LSTMLayer``s (time-major); a depth-gated stack hands each layer's cells to the next."""

    def __init__(
        self, input_size: int, hidden_size: int, num_layers: int = 1, config: LSTMVariant | str = "vanilla"
    ):
        super().__init__()
        self.config = variant(config) if isinstance(config, str) else config
        self.layers = nn.ModuleList(
            LSTMLayer(
                input_size if k == 0 else hidden_size,
                hidden_size,
                self.config,
                lower=self.config.depth_gate and k > 0,
            )
            for k in range(num_layers)
        )

    def forward(self, x: torch.Tensor, state: list | None = None) -> tuple[torch.Tensor, list]:
        """Outputs of the top layer (``T × B × N``) and each layer's final (y, c)."""
        finals, cells = [], None
        for k, layer in enumerate(self.layers):
            x, layer_cells, final = layer(
                x, None if state is None else state[k], cells if layer.lower else None
            )
            cells = layer_cells
            finals.append(final)
        return x, finals


def copy_from_torch(layer: LSTMLayer, weight_ih, weight_hh, bias_ih, bias_hh) -> None:
    """Load one layer of ``torch.nn.LSTM`` (gate order i, f, g, o; two biases) into a ``standard`` layer
    (order z, i, f, o; one bias)."""
    if layer.gates != ["z", "i", "f", "o"] or layer.config.depth_gate:
        raise ValueError("only a layer with all four gates and no depth gate maps onto torch.nn.LSTM")

    def reorder(w):
        i, f, g, o = w.chunk(4)
        return torch.cat([g, i, f, o])

    with torch.no_grad():
        layer.weight_x.copy_(reorder(weight_ih))
        layer.weight_r.copy_(reorder(weight_hh))
        layer.bias.copy_(reorder(bias_ih + bias_hh))
