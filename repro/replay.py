"""``repro replay``: re-train committed seeds from scratch and compare them with their records (CI).

``repro check`` re-judges the committed records but never runs the code that wrote them, so a change to a
model, a data module, a pinned config or a default can leave every record standing while the code no longer
produces it. Each paper's ``expected.yaml`` therefore names, under ``replay:``, a few committed seed records
cheap enough to re-train in CI (``repro.papers.Replay``). For each entry this module trains that seed again
in this process through the same ``repro.train.run_seed`` that wrote it, with the record's own overrides, and
compares:

- the resolved ``config``, key by key: a difference means a pinned config or a constructor default changed;
- every metric of either record: bit for bit when the entry's ``rel`` is 0 (NaN equals NaN), else within
  ``rel`` of the committed value; a metric present on one side only is a difference.

A replay runs on one torch thread (multi-threaded CPU kernels do not sum in the same order run to run, and the
committed records chosen for replay were trained on one thread), with W&B disabled, and writes its record,
checkpoints and logs into a temporary folder deleted afterwards: never into ``results/`` or ``runs/``.
``run_seed`` changes process-wide state (deterministic algorithms, the seed environment variables); that is
restored after each entry, so that a replay leaves the process as it found it.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import struct
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from repro import results
from repro.papers import Paper, Replay, discover, get_paper

console = Console()
# Set by run_seed (WANDB_MODE by this module) and restored after each replay: seed_everything writes the two
# PL_ variables, run_seed the cuBLAS workspace.
RUN_ENVIRONMENT = ("WANDB_MODE", "PL_GLOBAL_SEED", "PL_SEED_WORKERS", "CUBLAS_WORKSPACE_CONFIG")


class _Absent:
    """The value of a key that one record lacks (a sentinel: no config value can be mistaken for it)."""

    def __repr__(self) -> str:
        return "<absent>"


ABSENT = _Absent()


class ReplayError(ValueError):
    """A replay entry that cannot be replayed (its committed record is missing): the message names the fix."""


@dataclass(frozen=True)
class Difference:
    """One field (``metrics.<key>`` or ``config.<dotted key>``) whose replayed value differs."""

    field: str
    committed: Any
    replayed: Any

    def __str__(self) -> str:
        # repr: every digit of a float, quotes around a string config value.
        return f"{self.field} committed {self.committed!r} replayed {self.replayed!r}"


@dataclass
class ReplayResult:
    paper: str
    experiment: str
    tier: str
    seed: int
    seconds: float
    differences: list[Difference] = field(default_factory=list)

    @property
    def matched(self) -> bool:
        return not self.differences

    @property
    def label(self) -> str:
        return entry_label(self.paper, Replay(self.experiment, self.tier, self.seed))


def entry_label(paper: str, entry: Replay) -> str:
    return f"{paper}/{entry.experiment}/{entry.tier} seed {entry.seed}"


def committed_record(paper: str, entry: Replay, root: Path) -> dict[str, Any]:
    path = results.record_path(paper, entry.experiment, entry.tier, entry.seed, root)
    if not path.exists():
        raise ReplayError(
            f"{paper}: replay entry {entry.experiment}/{entry.tier} seed {entry.seed} names {path}, which "
            f"does not exist. Train and commit that record (python -m repro.train {paper} {entry.experiment} "
            f"{entry.tier} {entry.seed}) or remove the entry from the replay: list of "
            f"papers/{paper}/expected.yaml."
        )
    return results.read_json(path)


def metric_agrees(committed: float, replayed: float, rel: float) -> bool:
    """Bit for bit when ``rel`` is 0 (so 0.0 and -0.0 differ), else within ``rel`` of the committed value;
    NaN agrees with NaN."""
    if math.isnan(committed) or math.isnan(replayed):
        return math.isnan(committed) and math.isnan(replayed)
    if rel == 0:
        return struct.pack("<d", committed) == struct.pack("<d", replayed)
    return committed == replayed or abs(replayed - committed) <= rel * abs(committed)


def metric_differences(
    committed: dict[str, float], replayed: dict[str, float], rel: float
) -> list[Difference]:
    differences = []
    for key in [*committed, *(k for k in replayed if k not in committed)]:
        old, new = committed.get(key, ABSENT), replayed.get(key, ABSENT)
        if old is ABSENT or new is ABSENT or not metric_agrees(float(old), float(new), rel):
            differences.append(Difference(f"metrics.{key}", old, new))
    return differences


def config_differences(committed: Any, replayed: Any, where: str = "config") -> list[Difference]:
    """Every dotted key whose value differs; mappings are walked key by key, anything else compared whole."""
    if isinstance(committed, dict) and isinstance(replayed, dict):
        differences = []
        for key in [*committed, *(k for k in replayed if k not in committed)]:
            differences += config_differences(
                committed.get(key, ABSENT), replayed.get(key, ABSENT), f"{where}.{key}"
            )
        return differences
    return [] if committed == replayed else [Difference(where, committed, replayed)]


@contextlib.contextmanager
def isolated_run_state() -> Iterator[None]:
    """One torch thread, W&B off; the thread count, deterministic mode and RUN_ENVIRONMENT restored after."""
    import torch

    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    environment = {name: os.environ.get(name) for name in RUN_ENVIRONMENT}
    torch.set_num_threads(1)
    os.environ["WANDB_MODE"] = "disabled"
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        for name, value in environment.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def replay_entry(paper: str, entry: Replay, committed_root: Path) -> ReplayResult:
    """Re-train ``entry``'s seed from scratch and compare its record with the committed one."""
    from repro.train import RunSpec, run_seed

    committed = committed_record(paper, entry, committed_root)
    with tempfile.TemporaryDirectory(prefix="repro-replay-") as folder, isolated_run_state():
        spec = RunSpec(
            paper,
            entry.experiment,
            entry.tier,
            entry.seed,
            overrides=list(committed["overrides"]),
            progress=False,
            results_root=Path(folder) / "results",
            runs_root=Path(folder) / "runs",
        )
        started = time.perf_counter()
        run_seed(spec)
        seconds = time.perf_counter() - started
        # The record as written to disk (JSON), the form the committed one was read back in.
        replayed = results.read_json(
            results.record_path(paper, entry.experiment, entry.tier, entry.seed, spec.results_root)
        )
    differences = config_differences(committed["config"], replayed["config"])
    differences += metric_differences(committed["metrics"], replayed["metrics"], entry.rel)
    return ReplayResult(paper, entry.experiment, entry.tier, entry.seed, seconds, differences)


def _papers(name: str | None) -> list[Paper]:
    """The named paper (which must have replay entries), or every paper that has some."""
    if name is None:
        return [paper for paper in discover().values() if paper.replay]
    paper = get_paper(name)
    if not paper.replay:
        raise ReplayError(f"{name} has no replay entries (a replay: list in papers/{name}/expected.yaml)")
    return [paper]


def print_entries(papers: list[Paper], root: Path) -> None:
    """``--list``: the entries and the committed records' wall times (what a replay should take)."""
    table = Table(title="repro replay: committed seeds CI re-trains")
    for column in ("paper", "experiment", "tier", "seed", "tolerance", "committed wall s", "threads"):
        table.add_column(column, overflow="fold")
    total = 0.0
    for paper in papers:
        for entry in paper.replay:
            record = committed_record(paper.name, entry, root)
            total += record["wall_time_s"]
            table.add_row(
                paper.name,
                entry.experiment,
                entry.tier,
                str(entry.seed),
                "bit for bit" if entry.rel == 0 else f"rel {entry.rel:g}",
                f"{record['wall_time_s']:.1f}",
                str(record["hardware"].get("torch_threads")),
            )
    console.print(table)
    console.print(f"committed wall time of all entries: {total:.1f} s")


def cmd_replay(args: argparse.Namespace) -> int:
    """Exit status: 0 when every entry replays, 1 on any difference, 2 on bad input."""
    try:
        papers = _papers(args.paper)
        # Every committed record is read before anything trains: a missing one is bad input, found at once.
        for paper in papers:
            for entry in paper.replay:
                committed_record(paper.name, entry, args.results)
        if args.list:
            print_entries(papers, args.results)
            return 0
    except ValueError as err:  # an unknown paper (with the nearest name), a paper or record to fix
        console.print(f"[red]error:[/] {escape(str(err))}")
        return 2
    replayed: list[ReplayResult] = []
    not_run: list[str] = []
    for paper in papers:
        for entry in paper.replay:
            label, experiment = entry_label(paper.name, entry), paper.experiment(entry.experiment)
            # As `repro reproduce` does: absent data is said, with how to get it, never reported as a match.
            if not experiment.data_present():
                not_run.append(label)
                instructions = escape(experiment.data.instructions)
                console.print(f"[yellow]not run: data not present[/] {label}: {instructions}")
                continue
            console.print(f"re-training {label}")
            result = replay_entry(paper.name, entry, args.results)
            replayed.append(result)
            if result.matched:
                console.print(f"[green]OK[/] {result.label} ({result.seconds:.1f} s)")
            else:
                console.print(f"[red]DIFF[/] {result.label} ({result.seconds:.1f} s)")
    differing = [result for result in replayed if not result.matched]
    for result in differing:
        for difference in result.differences:
            console.print(f"[red]DIFF[/] {escape(result.label)}: {escape(str(difference))}", soft_wrap=True)
    seconds = sum(result.seconds for result in replayed)
    console.print(
        f"replayed {len(replayed)} seeds of {len(papers)} papers in {seconds:.1f} s: {len(differing)} differ"
        + (f", {len(not_run)} not run (data not present)" if not_run else "")
    )
    return 1 if differing else 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``replay`` on the ``repro`` command's subparsers."""
    parser = subparsers.add_parser(
        "replay",
        help="re-train the seeds expected.yaml lists under replay: and compare (non-zero on a difference)",
        description="Re-train each seed a paper's expected.yaml lists under replay: from scratch (one "
        "thread, a temporary folder) and compare its resolved config and every metric with the committed "
        "record.",
    )
    parser.add_argument("paper", nargs="?", help="one paper (default: every paper with replay entries)")
    parser.add_argument(
        "--list", action="store_true", help="list the entries and their committed wall times; train nothing"
    )
    parser.set_defaults(func=cmd_replay)
    return parser
