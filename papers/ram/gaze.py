"""Where a RAM run's policy looks, epoch by epoch, from the per-epoch checkpoints a run keeps.

For every ``--every``-th epoch checkpoint in a run folder (``runs/ram/<experiment>/<tier>/seed<k>``) it loads
the weights, runs the deterministic locator over the first ``--canvases`` fixed validation canvases (never
the test set) and measures, over the glimpses the policy chose (all but the random first):

- ``at_corner``: the share with both coordinates at the edge of the policy's reach (|l| ≥ SATURATED, tanh
  saturated): a policy that scans the corners of its square whatever the canvas shows;
- ``digit_distance``: the mean distance in pixels from a glimpse's centre to the digit's centre (the
  generator's corner + 14), beside ``still_distance``, the canvas centre's: what a policy that never moved
  from the middle would score;
- ``val_error``: the deterministic error on those canvases, to read them beside.

It writes ``results/ram/gaze/<experiment>_<tier>_seed<k>.json`` and a plot of the three against the epoch
beside it. The checkpoints are this project's own and are read with ``weights_only=True``.

    python -m papers.ram.gaze runs/ram/translated_ram8/full/seed1 --every 5
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np
import torch

from repro import results

SATURATED = 0.95  # |l| from which a coordinate counts as at the edge of where the policy can look
DIGIT = 28


def at_corner(locations: np.ndarray) -> np.ndarray:
    """For locations (… × 2) in the policy's frame: both coordinates at the edge of its reach."""
    return np.all(np.abs(locations) >= SATURATED, axis=-1)


def pixel_centres(locations: np.ndarray, reach: float, canvas: int) -> np.ndarray:
    """GlimpseSensor's mapping of locations (x, y in the policy's frame) to the centre pixel (x, y)."""
    return np.floor((np.clip(locations, -1, 1) * reach + 1) / 2 * canvas)


def digit_distance(centres: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """Pixel distance from centres (B × T × 2, x then y) to each canvas's digit centre (corners: B × 2, the
    digit's top-left pixel, row then column)."""
    digit = corners[:, None, ::-1] + DIGIT // 2
    return np.linalg.norm(centres - digit, axis=-1)


def checkpoints(run: Path, every: int) -> list[tuple[int, Path]]:
    """(epochs finished, path) of the run's epoch checkpoints, every ``every``-th and always the last."""
    found = sorted(
        (int(m.group(1)) + 1, path)
        for path in (run / "checkpoints").glob("epoch*.ckpt")
        if (m := re.fullmatch(r"epoch(\d+)\.ckpt", path.name))
    )
    last = len(found) - 1
    return [(epochs, path) for i, (epochs, path) in enumerate(found) if epochs % every == 0 or i == last]


def measure(path: Path, canvases: int) -> dict:
    from papers.ram.data import ClutteredMNIST
    from papers.ram.model import RAMModule

    state = torch.load(path, map_location="cpu", weights_only=True)
    module = RAMModule(**state["hyper_parameters"]).eval()
    module.load_state_dict(state["state_dict"])
    hp = state["datamodule_hyper_parameters"]
    data = ClutteredMNIST(
        hp["canvas"], hp["distractors"], eval_batch_size=canvases, limit=hp.get("limit"), seed=hp["seed"]
    )
    data.setup()
    batch = next(data.evaluation_batches("valid"))
    with torch.no_grad():
        rollout = module.rollout(batch["images"], batch["start"], sample=False)
    chosen = rollout.locations[:, 1:].numpy()
    reach = state["hyper_parameters"].get("location_reach", 1.0)
    corners = batch["corner"].numpy()
    errors = (rollout.logits.argmax(-1) != batch["labels"]).float().mean()
    still = np.full((len(corners), 1, 2), hp["canvas"] // 2)
    return {
        "val_error": round(100 * float(errors), 2),
        "at_corner": round(float(at_corner(chosen).mean()), 4),
        "digit_distance": round(
            float(digit_distance(pixel_centres(chosen, reach, hp["canvas"]), corners).mean()), 2
        ),
        "still_distance": round(float(digit_distance(still, corners).mean()), 2),
    }


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["epochs"]
    epochs = [row["epochs"] for row in rows]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6.4, 5.4), sharex=True)
    top.plot(epochs, [row["val_error"] for row in rows], color="black", label="validation error %")
    top.plot(
        epochs,
        [100 * row["at_corner"] for row in rows],
        color="tab:red",
        label="% of chosen glimpses at a corner",
    )
    top.set_ylim(0, 100)
    top.legend(fontsize=7)
    bottom.plot(epochs, [row["digit_distance"] for row in rows], color="tab:blue", label="chosen glimpses")
    bottom.plot(
        epochs, [row["still_distance"] for row in rows], "--", color="gray", label="the canvas centre"
    )
    bottom.set_ylabel("pixels to the digit's centre")
    bottom.set_xlabel("epochs trained")
    bottom.set_ylim(bottom=0)
    bottom.legend(fontsize=7)
    top.set_title(
        f"Where the policy looks: {report['experiment']} ({report['tier']}, seed {report['seed']})\n"
        f"deterministic locator, the first {report['canvases']} validation canvases",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m papers.ram.gaze", description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a run folder: runs/ram/<experiment>/<tier>/seed<k>")
    parser.add_argument("--every", type=int, default=5, help="measure every N-th epoch (and the last)")
    parser.add_argument("--canvases", type=int, default=1000, help="the first N fixed validation canvases")
    parser.add_argument("--out", type=Path, default=results.RESULTS / "ram" / "gaze")
    args = parser.parse_args(argv)
    parts = args.run.resolve().parts
    found = checkpoints(args.run, args.every) if args.every > 0 else []
    if len(parts) < 3 or not re.fullmatch(r"seed\d+", parts[-1]) or not found:
        print(
            f"error: {args.run} is not a run folder with epoch checkpoints (runs/ram/<experiment>/<tier>/"
            "seed<k>/checkpoints/epochNNN.ckpt; --every must be at least 1)",
            file=sys.stderr,
        )
        return 2
    experiment, tier, seed = parts[-3], parts[-2], int(parts[-1][4:])
    report = {
        "paper": "ram",
        "experiment": experiment,
        "tier": tier,
        "seed": seed,
        "canvases": args.canvases,
        "what": __doc__.split("\n\n")[1].replace("\n", " "),
        "saturated": SATURATED,
        "hardware": results.hardware(),
        "git": results.git_state(),
        "epochs": [],
    }
    out = args.out / f"{experiment}_{tier}_seed{seed}.json"
    for epochs, path in found:
        report["epochs"].append({"epochs": epochs, **measure(path, args.canvases)})
        results.write_json(out, report)
        print(f"epoch {epochs}: {report['epochs'][-1]}", flush=True)
    plot(report, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
