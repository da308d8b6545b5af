"""A trained character model from its run folder, for the analyses (cells, gate saturation, samples).

``load(experiment, tier, seed)`` reads the newest readable checkpoint of
``runs/char_rnn/<experiment>/<tier>/seed<k>/checkpoints/`` and rebuilds what the test scored:

- the network with the weights of the best validation epoch (``checkpoint["char_rnn"]["best_weights"]``);
  a run without a validation split has none, and its final weights (the module's ``state_dict``) are used;
- the corpus, set up as the run read it: the data arguments come from the checkpoint's datamodule
  hyperparameters when it has them, else from the run record ``results/char_rnn/<experiment>/<tier>/
  seed<k>.json`` (its resolved config), else from the config file ``papers/char_rnn/configs/
  <experiment>-<tier>.yaml``; the model arguments always come from the checkpoint.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from papers.char_rnn.data import CharData
from papers.char_rnn.model import CharRNN
from repro import config as config_lib
from repro import results
from repro.train import load_latest_checkpoint

PAPER = "char_rnn"
FOLDER = Path(__file__).resolve().parent
NET_KEYS = ("vocab_size", "cell", "hidden_size", "layers", "dropout", "dropout_from_layer", "init")


@dataclass
class Trained:
    """A trained ``CharRNN`` (eval mode), its corpus (set up) and the resolved config of the run."""

    experiment: str
    tier: str
    seed: int
    net: CharRNN
    data: CharData
    config: dict[str, Any]
    checkpoint: Path
    weights: str  # "best validation epoch" or "final (no validation split)"

    @property
    def cell(self) -> str:
        return self.net.cell

    @property
    def checkpoint_name(self) -> str:
        """The checkpoint's path, relative to the repository when it lies inside it."""
        try:
            return str(self.checkpoint.resolve().relative_to(results.ROOT))
        except ValueError:
            return str(self.checkpoint)

    @property
    def label(self) -> str:
        return f"{self.experiment} ({self.tier}, seed {self.seed})"

    def provenance(self) -> dict[str, Any]:
        """What an analysis report says about the model it read."""
        return {
            "experiment": self.experiment,
            "tier": self.tier,
            "seed": self.seed,
            "checkpoint": self.checkpoint_name,
            "weights": self.weights,
            "cell": self.cell,
        }


def run_folder(experiment: str, tier: str = "cpu", seed: int = 1, runs_root: Path | None = None) -> Path:
    if runs_root is None:
        import repro.train  # its RUNS follows REPRO_RUNS (and the tests' isolated folders)

        runs_root = repro.train.RUNS
    return Path(runs_root) / PAPER / experiment / tier / f"seed{seed}"


def reproduce_command(experiment: str, tier: str) -> str:
    command = f"make reproduce PAPER={PAPER} EXPERIMENT={experiment}"
    return command if tier == "cpu" else f"{command} TIER={tier}"


def newest_checkpoint(
    experiment: str, tier: str, seed: int, runs_root: Path | None = None
) -> tuple[Path, dict[str, Any]]:
    """The latest readable epoch checkpoint and its contents (``repro.train.load_latest_checkpoint``)."""
    folder = run_folder(experiment, tier, seed, runs_root) / "checkpoints"
    found = load_latest_checkpoint(folder)
    if found is not None:
        return found
    raise FileNotFoundError(
        f"no readable checkpoint in {folder}: train {experiment} ({tier} tier, seed {seed}) first with "
        f"`{reproduce_command(experiment, tier)}`"
    )


def run_config(experiment: str, tier: str, seed: int, checkpoint: dict) -> dict[str, Any]:
    """The run's resolved config: the record's, else the config file's, with the checkpoint's own
    hyperparameters (model, and data when it stored them) written over it."""
    record = results.record_path(PAPER, experiment, tier, seed, results.RESULTS)
    config_file = FOLDER / "configs" / f"{experiment}-{tier}.yaml"
    if record.exists():
        config = results.read_json(record)["config"]
    elif config_file.exists():
        config = config_lib.load(config_file, seed=seed)
    elif checkpoint.get("datamodule_hyper_parameters"):
        config = {"data": {"class_path": "papers.char_rnn.data.CharData", "init_args": {}}}
    else:
        raise FileNotFoundError(
            f"cannot tell which data {experiment} ({tier}) was trained on: the checkpoint has no data "
            f"arguments, and neither {record} nor {config_file} exists"
        )
    config = {**config}
    config["model"] = {
        "class_path": "papers.char_rnn.model.CharRNNModule",
        "init_args": dict(checkpoint["hyper_parameters"]),
    }
    data = {**config["data"], "init_args": dict(config["data"].get("init_args") or {})}
    data["init_args"].update(checkpoint.get("datamodule_hyper_parameters") or {})
    config["data"] = data
    return config


def load(experiment: str, tier: str = "cpu", seed: int = 1, runs_root: Path | None = None) -> Trained:
    """The trained model of one seed (best-validation weights, eval mode) with its corpus set up."""
    path, checkpoint = newest_checkpoint(experiment, tier, seed, runs_root)
    config = run_config(experiment, tier, seed, checkpoint)
    hparams = config["model"]["init_args"]
    net = CharRNN(**{k: hparams[k] for k in NET_KEYS if k in hparams})
    best = (checkpoint.get("char_rnn") or {}).get("best_weights")
    if best is not None:
        weights, kind = best, "best validation epoch"
    else:
        weights = {
            k.removeprefix("net."): v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")
        }
        kind = "final (no validation split)"
    net.load_state_dict(weights)
    net.eval()
    data_class = config_lib.import_class(config["data"]["class_path"])
    accepted = inspect.signature(data_class).parameters  # a checkpoint keeps every saved hyperparameter
    data = data_class(**{k: v for k, v in config["data"]["init_args"].items() if k in accepted})
    data.setup()
    if len(data.vocab) != net.vocab_size:
        raise ValueError(
            f"{path} has a {net.vocab_size}-symbol readout but corpus {data.hparams.corpus} has "
            f"{len(data.vocab)} distinct bytes"
        )
    return Trained(experiment, tier, seed, net, data, config, path, kind)


def head_of_test(trained: Trained, chars: int) -> tuple:
    """The first ``chars`` symbols of the test split: (ids as an int64 tensor, raw bytes as uint8)."""
    ids = trained.data.parts["test"][:chars]
    if len(ids) == 0:
        raise ValueError(f"{trained.label} has an empty test split")
    return torch.from_numpy(ids.astype("int64")), trained.data.vocab.symbols[ids]
