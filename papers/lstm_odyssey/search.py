"""Greff et al.'s random search (spec §4), declared for ``repro search lstm_odyssey`` (repro/search.py).

Every trial draws four hyperparameters independently, with the ranges of the spec's table [secondary]:

| hyperparameter | drawn as | config key |
|---|---|---|
| LSTM blocks | log-uniform in [20, 200], rounded | ``model.hidden_size`` |
| learning rate | log-uniform in [1e-6, 1e-2] | ``model.lr`` |
| momentum | 1 − log-uniform in [0.01, 1.0] (momentum 0 .. 0.99) | ``model.momentum`` |
| input noise | std uniform in [0, 1], Gaussian, training inputs only | ``data.input_noise`` |

and trains the variant's ``configs/<variant>-<tier>.yaml`` with them, plus two settings that give the ranges
the scale they were drawn for (``model.py``): the loss summed over the predicted frames (the paper's
per-chorale loss) and the learning rate rescaled by (1 − momentum) (spec §4, [unverified]). The author's
analysis notebook also varies gradient clipping and Nesterov on/off [code]; the spec's table does not, and
neither does this search (Nesterov momentum always, no clipping).

The analysis (``search_analysis.py``, run by ``figures.py``) compares the variants as Figure 3 does.
"""

from __future__ import annotations

from typing import Any

from papers.lstm_odyssey.model import VARIANT_NAMES

# What a study may search (--variant): the experiments of the nine architectures.
EXPERIMENTS = tuple(name.lower() for name in VARIANT_NAMES)
# Trials per variant, the default of --trials: the paper's 200 at full; at cpu, enough for the comparison.
TRIALS = {"smoke": 2, "cpu": 20, "full": 200}
# The paper ranks trials by validation NLL (its "best 10%"); a study minimises it.
OBJECTIVE, DIRECTION = "val_nll", "minimize"
FIXED = ("model.loss_reduction=sum", "model.momentum_scaled_lr=true")

# The comparison (spec §4-5): the best 10% of a variant's trials by validation NLL against vanilla's, by
# Welch's t-test at p < 0.05. 10% of the cpu tier's 20 trials is 2, too few for a t-test: at least 5.
REFERENCE = "vanilla"
BEST_FRACTION, BEST_AT_LEAST = 0.1, 5
ALPHA = 0.05


def sample(trial) -> dict[str, Any]:
    """One draw of the search space (an Optuna trial's parameters -> the config values they set)."""
    hidden = trial.suggest_int("hidden_size", 20, 200, log=True)
    lr = trial.suggest_float("learning_rate", 1e-6, 1e-2, log=True)
    one_minus_momentum = trial.suggest_float("one_minus_momentum", 0.01, 1.0, log=True)
    noise = trial.suggest_float("input_noise", 0.0, 1.0)
    return {
        "model.hidden_size": hidden,
        "model.lr": lr,
        "model.momentum": 1.0 - one_minus_momentum,
        "data.input_noise": noise,
    }
