"""Interpretable cells (Karpathy et al. 2015, §4.1): units whose activation follows a property of the text.

    python -m papers.char_rnn.cells EXPERIMENT [--tier cpu] [--seed 1] [--chars 6000] [--cell LAYER:UNIT ...]
                                               [--top 3]

The trained model (best-validation weights) reads the first ``--chars`` characters of the test split as one
stream, starting from a zero state, and every unit of every layer is traced (``CharRNN.trace``). A unit's
activation is tanh(c) for an LSTM (the paper colours its text by the cell state, squashed to [-1, 1]) and h
for a GRU or a tanh RNN. The paper found such cells by eye; here three properties of the text are computed
and every unit is ranked by the absolute Pearson correlation of its activation with each, over time:

- line position: characters read since the last newline byte (0 right after it);
- inside a quotation: 1 after an opening double-quote mark up to (not including) the closing one. War and
  Peace is UTF-8 bytes whose quote mark is the ASCII ``"`` byte (it has no curly quotes); English prose
  opens every paragraph of a long quotation again without closing the previous one, so a blank line ends
  any open quotation. On the Linux corpus the same rule follows string literals, roughly (escaped \\" and
  '"' are not special);
- bracket depth: nesting of ( ) [ ] { }, never below 0.

Each value is the state *after* reading the character, as the hidden state is. The stream is taken to
start at the start of a line, outside quotes, at depth 0 (the test split starts mid-paragraph; the first
blank line or newline puts the features right).

Writes ``results/char_rnn/cells_<experiment>_<tier>.html`` (self-contained, no script: the table of the top
units per feature, then for each of them and any ``--cell`` the text coloured byte by byte by the unit's
activation, blue -1, white 0, red +1, with the value as a tooltip) and ``cells_<experiment>_<tier>.json``
(every unit's correlation with every feature, and the top units).
"""

from __future__ import annotations

import argparse
import html
import sys
from pathlib import Path

import numpy as np
import torch

from papers.char_rnn.model import LSTM_CELLS
from papers.char_rnn.trained import Trained, head_of_test, load
from repro import results

NEWLINE, CR, QUOTE = 10, 13, 34
OPEN, CLOSE = b"([{", b")]}"
BLANK = {CR, 32, 9}  # bytes a blank line may hold besides its newline
FEATURES = {
    "line_position": "line position (characters since the last newline)",
    "in_quote": 'inside a quotation (between an opening and a closing " mark)',
    "bracket_depth": "bracket depth (nesting of ( ) [ ] { })",
}
SHORT = {"line_position": "line position", "in_quote": "inside quotes", "bracket_depth": "bracket depth"}
LEVELS = 20  # colour steps on each side of 0


# --------------------------------------------------------------------------------------------------
# features of the text
def as_bytes(raw) -> np.ndarray:
    if isinstance(raw, str):
        raw = raw.encode("utf-8")
    return np.frombuffer(raw, dtype=np.uint8) if isinstance(raw, bytes | bytearray) else np.asarray(raw)


def line_position(raw) -> np.ndarray:
    """Characters read since the last newline byte, after each byte (0 on the newline itself)."""
    out = np.zeros(len(raw := as_bytes(raw)))
    position = 0
    for t, byte in enumerate(raw):
        position = 0 if byte == NEWLINE else position + 1
        out[t] = position
    return out


def in_quote(raw, paragraph_reset: bool = True) -> np.ndarray:
    """1 while inside a quotation after each byte: the opening ``"`` is inside, the closing one outside.
    With ``paragraph_reset``, a blank line (a newline after a line of only CR, space or tab) closes an open
    quotation, as a long quotation in English prose reopens each paragraph with a new mark."""
    out = np.zeros(len(raw := as_bytes(raw)))
    inside, blank_line = False, True
    for t, byte in enumerate(raw):
        if byte == QUOTE:
            inside = not inside
        if byte == NEWLINE:
            if paragraph_reset and blank_line:
                inside = False
            blank_line = True
        elif byte not in BLANK:
            blank_line = False
        out[t] = inside
    return out


def bracket_depth(raw) -> np.ndarray:
    """Open ( [ { minus closed ) ] } so far, after each byte, clipped at 0 (a stray closer is ignored)."""
    out = np.zeros(len(raw := as_bytes(raw)))
    depth = 0
    for t, byte in enumerate(raw):
        if byte in OPEN:
            depth += 1
        elif byte in CLOSE:
            depth = max(0, depth - 1)
        out[t] = depth
    return out


def features(raw) -> dict[str, np.ndarray]:
    return {
        "line_position": line_position(raw),
        "in_quote": in_quote(raw),
        "bracket_depth": bracket_depth(raw),
    }


# --------------------------------------------------------------------------------------------------
# units and their correlations
def activations(trace: list[dict[str, torch.Tensor]], cell: str) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """``T × N`` activations of every unit of every layer (tanh(c) for an LSTM, h otherwise) and each
    column's (layer, unit): layers from 1, units from 0."""
    columns, labels = [], []
    for layer, values in enumerate(trace, start=1):
        a = values["c"].tanh() if cell in LSTM_CELLS else values["h"]
        columns.append(a.double().numpy())
        labels += [(layer, u) for u in range(a.shape[1])]
    return np.concatenate(columns, axis=1), labels


def correlations(matrix: np.ndarray, feature: np.ndarray) -> np.ndarray:
    """Pearson correlation of every column of ``matrix`` (T × N) with ``feature`` (T); 0 where either is
    constant."""
    a = matrix - matrix.mean(axis=0)
    f = np.asarray(feature, dtype=float) - np.mean(feature)
    scale = np.sqrt((a**2).sum(axis=0) * (f**2).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(scale > 0, (a.T @ f) / np.where(scale > 0, scale, 1), 0.0)


def rank_units(matrix: np.ndarray, feature: np.ndarray, top: int) -> list[tuple[int, float]]:
    """The ``top`` columns most correlated with ``feature`` (absolute Pearson r), best first: (column, r)."""
    r = correlations(matrix, feature)
    order = np.argsort(-np.abs(r), kind="stable")[:top]
    return [(int(i), float(r[i])) for i in order]


# --------------------------------------------------------------------------------------------------
# the page
def display_pieces(raw) -> list[str | None]:
    """What each byte shows, one entry per byte (positions stay aligned with the activations): an ASCII
    byte itself; the first byte of a UTF-8 sequence the whole character, its other bytes nothing (None);
    a CR nothing (the newline after it breaks the line); a byte that starts no valid sequence U+FFFD."""
    raw = as_bytes(raw)
    pieces: list[str | None] = []
    t = 0
    while t < len(raw):
        byte = int(raw[t])
        if byte == CR:
            pieces.append(None)
        elif byte < 0x80:
            pieces.append(chr(byte))
        else:
            size = 2 if 0xC0 <= byte < 0xE0 else 3 if 0xE0 <= byte < 0xF0 else 4 if 0xF0 <= byte < 0xF8 else 1
            text = bytes(raw[t : t + size]).decode("utf-8", errors="replace")
            if size > 1 and len(text) == 1 and text != "\ufffd" and t + size <= len(raw):
                pieces += [text, *([None] * (size - 1))]
                t += size
                continue
            pieces.append("\ufffd")
        t += 1
    return pieces


def colour(value: float) -> str:
    """Blue at -1 through white at 0 to red at +1."""
    v = float(np.clip(value, -1, 1))
    fade = round(255 * (1 - abs(v)))
    return f"rgb({fade},{fade},255)" if v < 0 else f"rgb(255,{fade},{fade})"


def level(value: float) -> int:
    return int(np.clip(round(float(value) * LEVELS), -LEVELS, LEVELS)) + LEVELS


def coloured_text(pieces: list[str | None], values: np.ndarray) -> str:
    """One span per displayed byte, its background the unit's activation, its tooltip the value."""
    spans = []
    for piece, value in zip(pieces, values, strict=True):
        if piece is None:
            continue
        spans.append(f'<span class="c{level(value)}" title="{value:+.3f}">{html.escape(piece)}</span>')
    return '<div class="text">' + "".join(spans) + "</div>"


STYLE = """
body { font-family: sans-serif; max-width: 60em; margin: 1em auto; color: #222; }
table { border-collapse: collapse; } td, th { border: 1px solid #ccc; padding: 2px 8px; text-align: left; }
.text { font-family: monospace; white-space: pre-wrap; line-height: 1.45; border: 1px solid #ddd;
        padding: 6px; max-height: 28em; overflow-y: auto; }
.legend span { display: inline-block; width: 1.2em; height: 1em; }
h3 { margin-bottom: 0.3em; }
"""


def page(
    trained: Trained, raw: np.ndarray, matrix: np.ndarray, labels: list, report: dict, shown: list
) -> str:
    levels = "\n".join(
        f".c{k + LEVELS} {{ background: {colour(k / LEVELS)}; }}" for k in range(-LEVELS, LEVELS + 1)
    )
    lstm = trained.cell in LSTM_CELLS
    what = "tanh(c), the cell state squashed to [-1, 1]" if lstm else "h, the hidden state"
    pieces = display_pieces(raw)
    rows = []
    for name, entry in report["features"].items():
        label = f"{html.escape(FEATURES[name])}<br><small>not 0 at {entry['nonzero']} of {len(raw)}</small>"
        if entry["constant"]:
            rows.append(
                f"<tr><td>{label}</td><td colspan=3>constant over this text: no correlation</td></tr>"
            )
        for rank, unit in enumerate(entry["top"], start=1):
            anchor = f"L{unit['layer']}u{unit['unit']}"
            rows.append(
                f"<tr><td>{label}</td><td>{rank}</td>"
                f'<td><a href="#{anchor}">layer {unit["layer"]}, unit {unit["unit"]}</a></td>'
                f"<td>{unit['r']:+.3f}</td></tr>"
            )
    blocks = []
    for column, why in shown:
        layer, unit = labels[column]
        r = ", ".join(
            f"r = {report['features'][n]['r'][layer - 1][unit]:+.3f} with {SHORT[n]}" for n in FEATURES
        )
        blocks.append(
            f'<h3 id="L{layer}u{unit}">layer {layer}, unit {unit}</h3>'
            f"<p>{html.escape(why)}; {r}</p>\n{coloured_text(pieces, matrix[:, column])}"
        )
    model = f"{trained.cell.upper()}, {len(trained.net.layers)} x {trained.net.hidden_size}"
    legend = "".join(f'<span class="c{k + LEVELS}"></span>' for k in range(-LEVELS, LEVELS + 1, 2))
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>cells: {html.escape(trained.label)}</title>
<style>{STYLE}{levels}</style></head><body>
<h1>Interpretable cells: {html.escape(trained.label)}</h1>
<p>Karpathy, Johnson &amp; Fei-Fei (2015), §4.1. The model ({model}, {html.escape(trained.weights)}
weights of <code>{html.escape(trained.checkpoint_name)}</code>) reads the first {len(raw)} characters of the
test split as one stream from a zero state. Each unit's activation is {what}. Every unit is ranked by the
absolute Pearson correlation of its activation over time with three properties of the text, each taken after
reading the character: the line position (characters since the last newline), being inside a quotation
(the quote mark is the ASCII <code>"</code> byte; a blank line closes an open quotation, as English prose
reopens each paragraph of a long quotation) and the bracket depth (( ) [ ] {{ }}, never below 0). The text
is shown byte by byte (a multi-byte UTF-8 character on its first byte; CR bytes are not shown), each
coloured by the unit's activation; hover for the value.</p>
<p class="legend">-1 {legend} +1</p>
<h2>Top units per feature</h2>
<table><tr><th>feature</th><th>rank</th><th>unit</th><th>Pearson r</th></tr>
{"".join(rows)}
</table>
<h2>Units</h2>
{"".join(blocks)}
</body></html>
"""


def analyse(trained: Trained, chars: int, top: int, cells: list[tuple[int, int]] = ()) -> tuple[dict, str]:
    """(the JSON report, the HTML page) for the first ``chars`` test characters."""
    ids, raw = head_of_test(trained, chars)
    trace = trained.net.trace(ids)
    matrix, labels = activations(trace, trained.cell)
    hidden = trained.net.hidden_size
    report = {
        **trained.provenance(),
        "activation": "tanh(c)" if trained.cell in LSTM_CELLS else "h",
        "characters": len(raw),
        "quote_mark": '"',
        "features": {},
    }
    shown: dict[int, list[str]] = {}
    for name, feature in features(raw).items():
        r = correlations(matrix, feature)
        constant = bool(np.ptp(feature) == 0)  # nothing to correlate with (no quote in the text, say)
        ranked = [] if constant else rank_units(matrix, feature, top)
        report["features"][name] = {
            "description": FEATURES[name],
            "constant": constant,
            "nonzero": int(np.count_nonzero(feature)),  # characters where it is not 0 (few: a weak signal)
            "top": [{"layer": labels[i][0], "unit": labels[i][1], "r": value} for i, value in ranked],
            "r": [r[k * hidden : (k + 1) * hidden].round(4).tolist() for k in range(len(trace))],
        }
        for rank, (i, _) in enumerate(ranked, start=1):
            shown.setdefault(i, []).append(f"#{rank} for {SHORT[name]}")
    for layer, unit in cells:
        if not (1 <= layer <= len(trace) and 0 <= unit < hidden):
            raise ValueError(
                f"--cell {layer}:{unit} is not a unit of this model: layers 1..{len(trace)}, units "
                f"0..{hidden - 1}"
            )
        shown.setdefault(labels.index((layer, unit)), []).append("asked for with --cell")
    order = [(i, ", ".join(why)) for i, why in shown.items()]
    return report, page(trained, raw, matrix, labels, report, order)


def parse_cell(text: str) -> tuple[int, int]:
    try:
        layer, unit = (int(part) for part in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not LAYER:UNIT (e.g. 1:17; layers from 1)") from None
    return layer, unit


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m papers.char_rnn.cells",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("experiment", help="e.g. wp_lstm_1x64")
    parser.add_argument("--tier", default="cpu")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--chars", type=int, default=6000, help="test characters to read (default 6000)")
    parser.add_argument(
        "--cell",
        type=parse_cell,
        action="append",
        default=[],
        metavar="LAYER:UNIT",
        help="also show this unit (layers from 1, units from 0; repeatable)",
    )
    parser.add_argument("--top", type=int, default=3, help="units listed per feature (default 3)")
    parser.add_argument("--runs", type=Path, help="runs folder (default: runs/ or $REPRO_RUNS)")
    parser.add_argument("--out", type=Path, help="folder to write to (default: results/char_rnn)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # one stream, step by step: small ops
    try:
        if args.chars < 2 or args.top < 1:
            raise ValueError("--chars must be at least 2 and --top at least 1")
        trained = load(args.experiment, args.tier, args.seed, args.runs)
        report, text = analyse(trained, args.chars, args.top, args.cell)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = args.out or results.RESULTS / "char_rnn"
    stem = out / f"cells_{args.experiment}_{args.tier}"
    results.atomic_write_text(stem.with_suffix(".html"), text)
    results.write_json(stem.with_suffix(".json"), report)
    for name, entry in report["features"].items():
        best = ", ".join(f"L{u['layer']}:{u['unit']} r={u['r']:+.3f}" for u in entry["top"]) or "constant"
        print(f"{name}: {best}")
    print(stem.with_suffix(".html"))
    print(stem.with_suffix(".json"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
