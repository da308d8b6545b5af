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
