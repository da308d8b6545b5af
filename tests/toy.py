"""A toy paper's expected.yaml for the tests of the metafile and of judging: one experiment, ``exp``, whose
one metric, ``acc``, gates at the cpu tier (published 90, abs 1; higher is better), seeds picked by the lowest
``val_loss``. A test adds or breaks one field at a time."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from repro.papers import ExpectedError, discover


def toy_expected(**metric) -> dict:
    """The toy expected.yaml as a dict; ``metric`` overrides fields of its one metric."""
    return {
        "paper": {"title": "Toy", "authors": ["A. Author"], "year": 2015, "arxiv": "0000.00000"},
        "selection": {"rule": "best", "by": "val_loss", "mode": "min"},
        "experiments": {
            "exp": {
                "title": "Toy experiment",
                "table": "Table 1",
                "metrics": [
                    {
                        "key": "acc",
                        "label": "accuracy",
                        "published": 90.0,
                        "source": "Table 1",
                        "evidence": "paper",
                        "direction": "higher",
                        "tolerance": {"abs": 1},
                        "gate": ["cpu"],
                        **metric,
                    }
                ],
            }
        },
    }


def write_paper(root: Path, body: dict | str, name: str = "toy") -> Path:
    """``root/papers/<name>/expected.yaml`` holding ``body`` (a dict, or raw text for broken YAML)."""
    path = root / "papers" / name / "expected.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body if isinstance(body, str) else yaml.safe_dump(body, sort_keys=False))
    return path


def assert_rejected(root: Path, body: dict, field: str, problem: str) -> None:
    """Discovering ``body`` as the toy paper fails with an error that names the file, the field and the
    problem: what every schema test of expected.yaml checks."""
    path = write_paper(root, body)
    with pytest.raises(ExpectedError) as err:
        discover(root / "papers")
    assert str(path) in str(err.value)
    assert f"field '{field}'" in str(err.value)
    assert problem in str(err.value)


def toy_with_claims(*claims: dict, **metric) -> dict:
    """The toy paper with two more experiments, ``base`` and ``weak``, and ``claims``. Every experiment
    reports ``acc`` (higher is better; only ``exp``'s gates, with ``metric``'s overrides) and ``loss`` (lower
    is better, never gated); the seeds are picked by the lowest ``val_loss``, so ``acc`` and ``loss`` compare
    the selected seed's values."""
    body = toy_expected(**metric)
    loss = {
        "key": "loss",
        "label": "test loss",
        "published": None,
        "source": "-",
        "evidence": "paper",
        "direction": "lower",
    }
    body["experiments"]["exp"]["metrics"].append(loss)
    for name in ("base", "weak"):
        acc = {**toy_expected()["experiments"]["exp"]["metrics"][0], "published": None, "gate": []}
        body["experiments"][name] = {"title": f"the {name} experiment", "metrics": [acc, dict(loss)]}
    body["claims"] = list(claims)
    return body


def beats(better: str, worse: str, metric: str = "acc", **fields) -> dict:
    """A claim that ``better`` beats ``worse`` on ``metric``, judged and gated at cpu; ``fields`` override."""
    return {
        "id": f"{better}-beats-{worse}",
        "statement": f"{better} beats {worse}",
        "source": "Table 1",
        "evidence": "paper",
        "tiers": ["cpu"],
        "gate": ["cpu"],
        "better": {"experiment": better, "metric": metric},
        "worse": {"experiment": worse, "metric": metric},
        **fields,
    }
