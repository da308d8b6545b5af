"""``repro``: reproduce a paper, check committed results, browse the leaderboard.

    repro list [PAPER]                     papers, experiments, tiers and their latest verdicts
    repro reproduce PAPER [options]        train + evaluate seeds; print published | committed | this run
    repro check [PAPER]                    re-derive every committed aggregate from its records (CI)
    repro replay [PAPER]                   re-train the committed seeds each paper names; compare (CI)
    repro config PAPER EXPERIMENT          print the fully resolved config of a tier
    repro leaderboard [--wandb]            rebuild results/LEADERBOARD.md and results/leaderboard.html
    repro bench [PAPER]                    run the papers' benchmarks, JSON under results/bench/
    repro sample PAPER [options]           text from a trained model (papers with a sampler)
    repro figures PAPER [--tier T]         redraw a paper's figures from its committed records
    repro search PAPER [options]           the paper's random search (Optuna), its analysis and verdict
    repro features PAPER EXPERIMENT        cache the VGG-19 features an experiment reads (one-time pass)

A run writes runs/results/ unless --evidence makes it write the committed evidence, results/.
Exit status: 0 when every gated number agrees, 1 on a miss, 2 on bad input (unknown names, bad configs).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from repro import claims as claims_lib
from repro import evidence as evidence_lib
from repro import replay, results
from repro.config import ConfigError
from repro.papers import TIERS, ExpectedError, Experiment, Paper, discover, get_paper, is_search_experiment
from repro.verdict import KNOWN_MISS, MISS, fmt, judge, passing_known_misses

console = Console()
VERDICT_STYLE = {
    "PASS": "bold green",
    "MISS": "bold red",
    "MISS (known)": "red",
    "SHOWN": "dim",
    "NOT RUN": "yellow",
    "NOT IMPLEMENTED": "yellow",
    "NO RESULT": "yellow",
}


def selected_experiments(paper: Paper, names: list[str] | None) -> list[Experiment]:
    if names:
        return [paper.experiment(n) for n in names]
    return paper.default_experiments(everything=True)


# --------------------------------------------------------------------------------------------------
# reproduce
#
# Two places hold records. The committed evidence, results/ (or --results), is what `repro check` judges and
# the leaderboard shows; only `reproduce --evidence` writes it. Every other run writes its records to a place
# of its own, runs/results/ (or --out), and prints them beside the published numbers and the committed
# evidence. Each invocation that trains leaves a manifest (runs/<paper>/invocation-<tier>.json) naming its
# seeds; `--resume` continues exactly those seeds, whatever either place already holds.


def user_results() -> Path:
    """Where a run's records go unless it writes the committed evidence: outside the tracked tree."""
    from repro import train

    return train.RUNS / "results"


def invocation_path(paper: str, tier: str) -> Path:
    from repro import train

    return train.RUNS / paper / f"invocation-{tier}.json"


def work_dir(paper: str, experiment: str, tier: str, seed: int) -> Path:
    from repro.train import RunSpec

    return RunSpec(paper, experiment, tier, seed).work_dir


def seed_overrides(overrides: list[str], devices, accelerator) -> list[str]:
    """Every config override a seed's process runs with: --set items, then --devices and --accelerator."""
    items = list(overrides)
    if devices is not None:
        items.append(f"trainer.devices={devices}")
    if accelerator is not None:
        items.append(f"trainer.accelerator={accelerator}")
    if devices not in (None, "1", 1):
        items.append("trainer.strategy=ddp")
    return items


def child_command(
    paper: str, experiment: str, tier: str, seed: int, plan: dict[str, Any], progress: bool
) -> list[str]:
    cmd = [sys.executable, "-m", "repro.train", paper, experiment, tier, str(seed)]
    for item in seed_overrides(plan["overrides"], plan["devices"], plan["accelerator"]):
        cmd += ["--set", item]
    cmd += ["--resume", "--invocation", plan["id"]]  # a seed with no checkpoint starts from scratch
    if not progress:
        cmd.append("--no-progress")
    return cmd


def resume_command(paper: str, tier: str) -> str:
    make = f"make reproduce PAPER={paper} TIER={tier} RESUME=1"
    return f"repro reproduce {paper} --tier {tier} --resume   (or: {make})"


def chosen_seeds(args: argparse.Namespace) -> list[int]:
    """--seed's seeds where given (say the ones a committed aggregate lacks), else 1..--seeds."""
    return sorted(set(args.seed)) if args.seed else list(range(1, args.seeds + 1))


def new_plan(paper: Paper, experiments: list[Experiment], args: argparse.Namespace, out: Path) -> dict:
    """The manifest of a fresh invocation: what `--resume` will continue if this one is cut off."""
    plan = {
        "id": uuid.uuid4().hex[:12],
        "started_at": results.now(),
        "paper": paper.name,
        "tier": args.tier,
        "experiments": [e.name for e in experiments],
        "seeds": chosen_seeds(args),
        "overrides": list(args.overrides),
        "devices": args.devices,
        "accelerator": args.accelerator,
        "evidence": args.evidence,
        "out": str(out.resolve()),
    }
    from repro.train import lock_holder, set_aside_checkpoints

    works = [work_dir(paper.name, e, args.tier, seed) for e in plan["experiments"] for seed in plan["seeds"]]
    busy = [f"{work} (process {pid})" for work in works if (pid := lock_holder(work))]
    if busy:
        raise ConfigError(
            f"another run is training the same seeds now: {', '.join(busy)}; wait for it to finish or stop it"
        )
    for work in works:
        # Old checkpoints of these seeds must not be taken for this invocation's by a later --resume.
        set_aside_checkpoints(work)
    results.write_json(invocation_path(paper.name, args.tier), plan)
    return plan


def load_plan(paper: Paper, args: argparse.Namespace) -> dict:
    path = invocation_path(paper.name, args.tier)
    if not path.exists():
        raise ConfigError(
            f"nothing to resume: no run of {paper.name} at the {args.tier} tier was started here ({path} "
            f"does not exist); run it without --resume"
        )
    plan = results.read_json(path)
    asked = {
        "experiments": args.experiment,
        "seeds": None if args.seeds == SEEDS_DEFAULT and not args.seed else chosen_seeds(args),
        "overrides": args.overrides or None,
    }
    for key, value in asked.items():
        if value is not None and value != plan[key]:
            console.print(
                f"[yellow]note:[/] --resume continues the run started at {plan['started_at']} with its own "
                f"{key} ({plan[key]}), not {value}"
            )
    return plan


def finished_seeds(plan: dict) -> set[tuple[str, int]]:
    """The (experiment, seed) pairs of an invocation that it finished: their record is written and their work
    folder's marker names this invocation."""
    from repro.train import finished_by

    return {
        (experiment, seed)
        for experiment in plan["experiments"]
        for seed in plan["seeds"]
        if finished_by(work_dir(plan["paper"], experiment, plan["tier"], seed)) == plan["id"]
        and results.record_path(plan["paper"], experiment, plan["tier"], seed, Path(plan["out"])).exists()
    }


def seed_states(plan: dict) -> list[tuple[str, int, str]]:
    """(experiment, seed, state) for every seed of an invocation: 'finished' (by this invocation), or where
    it continues: 'after N finished epochs (checkpoints/...)' or 'from scratch (no checkpoint)'. Only the
    unfinished seeds' checkpoints are read."""
    from repro.train import latest_checkpoint

    finished = finished_seeds(plan)
    states = []
    for experiment in plan["experiments"]:
        for seed in plan["seeds"]:
            if (experiment, seed) in finished:
                states.append((experiment, seed, "finished"))
                continue
            work = work_dir(plan["paper"], experiment, plan["tier"], seed)
            checkpoint = latest_checkpoint(work / "checkpoints")
            if checkpoint is None:
                where = "from scratch (no checkpoint)"
            else:
                done = int(checkpoint.stem.removeprefix("epoch")) + 1  # epochNNN.ckpt: NNN counts from 0
                where = (
                    f"after {done} finished epoch{'s' if done > 1 else ''} (checkpoints/{checkpoint.name})"
                )
            states.append((experiment, seed, where))
    return states


def headline_metric(experiment: Experiment, tier: str) -> str:
    """The number a finished seed is announced with: the first gated metric, else the first published one."""
    gated = [m for m in experiment.metrics if m.gates_at(tier)]
    published = [m for m in experiment.metrics if m.published is not None]
    return (gated or published or list(experiment.metrics))[0].key


def human_seconds(seconds: float) -> str:
    minutes = round(seconds / 60)
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min"


def time_left(queue, running, started, estimates, took, parallel) -> float:
    """Seconds until the last seed ends: each unfinished seed's estimate (its experiment's committed mean,
    else the mean of the seeds finished so far) less what a running one has done, over the parallel jobs."""
    fallback = sum(took) / len(took)
    now = time.monotonic()
    pending = sum(estimates.get(name, fallback) for name, _ in queue)
    pending += sum(
        max(estimates.get(name, fallback) - (now - started[name, seed]), 0) for _, name, seed, _ in running
    )
    return pending / parallel


def finished_headline(paper: Paper, plan: dict, name: str, seed: int) -> str:
    path = results.record_path(paper.name, name, plan["tier"], seed, Path(plan["out"]))
    key = headline_metric(paper.experiment(name), plan["tier"])
    value = results.read_json(path)["metrics"].get(key) if path.exists() else None
    return f"{key} {fmt(value)}"


def run_seeds(
    paper: Paper, plan: dict, jobs_at_once: int | None, progress: bool, committed: Path
) -> list[str]:
    """Run every unfinished (experiment, seed) of ``plan`` as its own process; returns the failures. Says the
    plan and its estimated time first; a line per finished seed with its headline number and the time left."""
    finished = finished_seeds(plan)
    jobs = [(e, seed) for e in plan["experiments"] for seed in plan["seeds"] if (e, seed) not in finished]
    if not jobs:
        return []
    parallel = jobs_at_once or (
        1 if plan["devices"] not in (None, "1", 1) else min(os.cpu_count() or 1, len(jobs))
    )
    # The cores are shared among the parallel runs; a user's OMP_NUM_THREADS wins (other work on the machine).
    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // parallel))
    estimates = evidence_lib.mean_wall_seconds(paper, plan["tier"], committed)
    unknown = sorted({name for name, _ in jobs if name not in estimates})
    known = sum(estimates[name] for name, _ in jobs if name in estimates)
    experiments = sorted({name for name, _ in jobs})
    console.print(
        f"plan: {paper.name} {plan['tier']}: {len(experiments)} experiment(s) x {len(plan['seeds'])} "
        f"seed(s), {len(jobs)} run(s) to train, {parallel} at a time with {threads} thread(s) each; "
        + "estimated "
        + ("at least " if known and unknown else "")
        + (f"{human_seconds(known / parallel)}" if known else "(unknown)")
        + " from the committed records' wall times"
        + (f" (no committed record for {', '.join(unknown)})" if unknown else "")
    )
    # The children write their records where this command aggregates them from.
    env = {**os.environ, "OMP_NUM_THREADS": threads, "PYTHONUNBUFFERED": "1", "REPRO_RESULTS": plan["out"]}
    show_child = parallel == 1 and progress
    failures: list[str] = []
    running: list[tuple[subprocess.Popen, str, int, Path | None]] = []
    started: dict[tuple[str, int], float] = {}
    took: list[float] = []  # seconds of the seeds finished so far: the estimate where no record gives one
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        TextColumn("left"),
        TimeRemainingColumn(),
    ]
    queue = list(jobs)
    # Ctrl-C, and a SIGTERM from a scheduler or `kill`, stop the seeds cleanly (below), also when this command
    # was started in the background, where the shell had SIGINT ignored.
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        with Progress(*columns, console=console, disable=show_child) as bar:
            task = bar.add_task(f"{paper.name} {plan['tier']}: seeds", total=len(jobs))
            while queue or running:
                while queue and len(running) < parallel:
                    name, seed = queue.pop(0)
                    work = work_dir(paper.name, name, plan["tier"], seed)
                    work.mkdir(parents=True, exist_ok=True)
                    # One process at a time has the terminal; the others write their own log.
                    log = None if show_child else work / "train.log"
                    cmd = child_command(paper.name, name, plan["tier"], seed, plan, show_child)
                    out = open(log, "w") if log else None  # noqa: SIM115 - closed when the process ends
                    running.append(
                        (
                            subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT),
                            name,
                            seed,
                            log,
                        )
                    )
                    started[name, seed] = time.monotonic()
                    bar.console.print(f"started {name} seed {seed}" + (f" (log: {log})" if log else ""))
                for entry in list(running):
                    proc, name, seed, log = entry
                    if proc.poll() is None:
                        continue
                    running.remove(entry)
                    bar.advance(task)
                    if proc.returncode:
                        where = f"see {log}" if log else "its output is above"
                        failure = f"{name} seed {seed} exited {proc.returncode}; {where}"
                        failures.append(failure + (f" {BAD_INPUT}" if proc.returncode == 2 else ""))
                        bar.console.print(f"[red]failed[/] {escape(failures[-1])}")
                        if log and log.exists():
                            bar.console.print(escape(log.read_text()[-2000:]))
                        continue
                    took.append(time.monotonic() - started[name, seed])
                    left = time_left(queue, running, started, estimates, took, parallel)
                    bar.console.print(
                        f"finished {name} seed {seed} in {human_seconds(took[-1])}: "
                        f"{finished_headline(paper, plan, name, seed)}; "
                        f"{len(jobs) - len(queue) - len(running)}/{len(jobs)} done"
                        + (f", about {human_seconds(left)} left" if queue or running else "")
                    )
                time.sleep(0.2)
    except KeyboardInterrupt:
        for proc, *_ in running:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)  # Lightning stops at the batch; finished epochs stay saved
        for proc, *_ in running:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        cut = ", ".join(f"{name} seed {seed}" for _, name, seed, _ in running) or "none"
        console.print(
            f"[yellow]interrupted.[/] Seeds cut off: {cut}; their checkpoints are kept. Continue with:\n"
            f"  {resume_command(paper.name, plan['tier'])}"
        )
        raise
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    return failures


def records_of(paper: str, experiment: str, tier: str, root: Path, seeds: list[int] | None = None):
    """The seed records of an experiment under ``root`` (all of them, or the seeds named)."""
    found = results.load_records(paper, experiment, tier, root)
    return [r for r in found if seeds is None or r["seed"] in seeds]


def committed_text(aggregate: dict | None, key: str) -> str:
    if not aggregate:
        return "–"
    row = next((r for r in aggregate["metrics"] if r["key"] == key), None)
    if row is None or not row.get("n"):
        return "–"
    verdict = aggregate["verdict"] if aggregate["verdict"] in NO_ROW_VERDICT else row["verdict"]
    return f"{row['text']} ({verdict}, {len(aggregate['records'])} seeds)"


NO_ROW_VERDICT = ("NOT RUN", "NOT IMPLEMENTED", "NO RESULT")


def print_verdicts(
    paper: Paper,
    aggregates: list[dict[str, Any]],
    committed: dict[tuple[str, str], dict] | None = None,
    reproduced_title: str = "reproduced",
) -> None:
    """A row per metric: published, (with ``committed``) the committed evidence, this judgement, verdict."""
    title = f"{paper.title} ({paper.name}): published vs " + (
        f"committed evidence vs {reproduced_title}" if committed is not None else reproduced_title
    )
    table = Table(title=title, show_lines=False)
    columns = ["experiment", "metric", "published", "evidence"]
    columns += ["committed evidence"] if committed is not None else []
    columns += [reproduced_title, "tolerance", "tier", "verdict"]
    for column in columns:
        table.add_column(column, overflow="fold")
    for agg in aggregates:
        for row in agg["metrics"]:
            tol = ", ".join(f"{k} {v:g}" for k, v in row["tolerance"].items())
            gated = "" if row["gated"] else " (not gated)"
            verdict = agg["verdict"] if agg["verdict"] in NO_ROW_VERDICT else row["verdict"]
            cells = [agg["experiment"], row["label"], fmt(row["published"]), escape(f"[{row['evidence']}]")]
            if committed is not None:
                cells.append(
                    escape(committed_text(committed.get((agg["experiment"], agg["tier"])), row["key"]))
                )
            known = f": {row['known_miss']['why']}" if verdict == KNOWN_MISS and row.get("known_miss") else ""
            cells += [row["text"], tol, agg["tier"], f"[{VERDICT_STYLE.get(verdict, '')}]{verdict}[/]{gated}"]
            cells[-1] += escape(known)
            table.add_row(*cells)
    console.print(table)


SEEDS_DEFAULT = 3


def check_writable(folder: Path) -> None:
    """A run whose records cannot be written must fail before it trains, not after: make the folder and a
    file in it (a permission check alone would pass for root on a read-only mount)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise ConfigError(
            f"cannot write the run's records to {folder}: {err.strerror or err}; choose another with --out"
        ) from err


def cmd_reproduce(args: argparse.Namespace) -> int:
    paper = get_paper(args.paper)
    if args.seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {args.seeds}")
    if args.seed and min(args.seed) < 1:
        raise ConfigError(f"--seed must be at least 1, got {min(args.seed)}")
    if args.jobs is not None and args.jobs < 1:
        raise ConfigError(f"--jobs must be at least 1 (seeds trained at once), got {args.jobs}")
    plan = load_plan(paper, args) if args.resume and args.train else None
    named = plan["experiments"] if plan else args.experiment
    names = named
    if not named and paper.headline and not args.all:
        names = list(paper.headline)
        everything = len(paper.default_experiments(everything=True))
        console.print(
            f"running {paper.name}'s headline experiments ({', '.join(names)}); all {everything}: "
            f"repro reproduce {paper.name} --all (make reproduce PAPER={paper.name} ALL=1)"
        )
    experiments = selected_experiments(paper, names)
    if not named:
        # Some experiments are too large for a tier (a 3x512 grid cell has no cpu config): a whole-paper run
        # says so and runs the rest; naming such an experiment is still an error.
        skipped = [e.name for e in experiments if not paper.config_path(e.name, args.tier).exists()]
        if skipped:
            console.print(
                f"[yellow]not run at this tier:[/] {len(skipped)} experiment(s) without a '{args.tier}' "
                f"config ({', '.join(skipped[:3])}{', ...' if len(skipped) > 3 else ''}); "
                f"`repro list {paper.name}` shows each experiment's tiers"
            )
        experiments = [e for e in experiments if e.name not in skipped]
    for e in experiments:
        if is_search_experiment(e.name):
            raise ConfigError(
                f"{paper.name}/{e.name} is judged from random-search trials, not seeds: "
                f"repro search {paper.name} --variant {e.name.removeprefix('search_')}"
            )
        if not e.implemented:
            raise ConfigError(f"{paper.name}/{e.name} is not implemented in this suite: {e.note}")
        if not paper.config_path(e.name, args.tier).exists():
            raise ConfigError(
                f"{paper.name}/{e.name} has no '{args.tier}' config; it has: "
                f"{', '.join(paper.tiers(e.name)) or 'none'}"
            )
    if args.train:
        # A bad --set, --devices or --accelerator fails here, once and before anything trains, not once in
        # every seed's process (a model's check_config sees them, as the seeds' processes will).
        from repro import config

        source = plan or {
            "overrides": args.overrides,
            "devices": args.devices,
            "accelerator": args.accelerator,
        }
        overrides = seed_overrides(source["overrides"], source["devices"], source["accelerator"])
        for e in experiments:
            config.load(paper.config_path(e.name, args.tier), overrides)
    evidence = plan["evidence"] if plan else args.evidence
    out = Path(plan["out"]) if plan else (args.results if evidence else (args.out or user_results()))
    check_writable(out)
    # What the committed evidence held before this run: shown beside it (and replaced by it with --evidence).
    committed = {
        (e.name, args.tier): results.read_json(path)
        for e in experiments
        if (path := results.run_dir(paper.name, e.name, args.tier, args.results) / "aggregate.json").exists()
    }
    runnable = [e for e in experiments if e.data_present()]
    for e in experiments:
        if e not in runnable:
            missing = ", ".join(str(path) for path in e.missing_files())
            console.print(
                f"[yellow]not run: data not present[/] for {e.name}: missing {escape(missing)}; "
                f"{escape(e.data.instructions)}"
            )
    failures: list[str] = []
    finished: set[tuple[str, int]] | None = None  # None: judge the records already there (--no-train)
    if runnable and args.train:
        if plan is None:
            plan = new_plan(paper, runnable, args, out)
        else:
            plan["experiments"] = [e.name for e in runnable]
            for name, seed, state in seed_states(plan):
                console.print(
                    f"resume: {name} seed {seed}: {state if state == 'finished' else 'continues ' + state}"
                )
        console.print(
            f"writing {'the committed evidence' if evidence else 'this run'} to {out}"
            + ("" if evidence else " (the committed evidence is not touched; --evidence writes it)")
        )
        try:
            failures = run_seeds(paper, plan, args.jobs, args.progress, args.results)
        except KeyboardInterrupt:
            return 130
        finished = finished_seeds(plan)
    seeds = plan["seeds"] if plan else chosen_seeds(args)
    this_run, written = [], []
    for e in experiments:
        mine = [
            r
            for r in records_of(paper.name, e.name, args.tier, out, seeds)
            if finished is None or (e.name, r["seed"]) in finished
        ]
        this_run.append(judge(e, mine, args.tier, e.data_present()))
        if not mine:
            continue
        # The committed evidence combines every committed seed of the experiment; a user's run only its own.
        kept = records_of(paper.name, e.name, args.tier, out) if evidence else mine
        written.append(evidence_lib.write_aggregate(paper, e, args.tier, kept, out))
        previous = committed.get((e.name, args.tier))
        if evidence and previous and len(kept) < len(previous["records"]):
            console.print(
                f"[yellow]note:[/] {e.name}: the committed aggregate combined "
                f"{len(previous['records'])} seeds, the new one {len(kept)}"
            )
        if evidence and len(kept) > len(mine):
            console.print(
                f"{e.name}: the committed aggregate combines {len(kept)} seeds: "
                f"{', '.join(str(r['seed']) for r in kept)} ({len(mine)} from this run)"
            )
    make_figures(paper, args.tier, out)
    print_verdicts(paper, this_run, committed, reproduced_title="this run")
    missed = [a for a in this_run if a["verdict"] in (MISS, KNOWN_MISS)]
    for failure in failures:
        console.print(f"[red]run failed:[/] {escape(failure)}")
    for agg in missed:
        label = "MISS (known: see the paper's README)" if agg["verdict"] == KNOWN_MISS else "MISS"
        console.print(f"[red]{label}[/] on gated numbers of {agg['experiment']}")
    if not evidence and written:
        console.print(f"this run's records: {out / paper.name}")
    if any(failure.endswith(BAD_INPUT) for failure in failures):
        return 2  # a seed refused its input (missing or corrupt data, a bad config): say so as the CLI does
    return 1 if missed or failures else 0


BAD_INPUT = "(bad input or data: its message is above)"


def make_figures(paper: Paper, tier: str, root: Path) -> None:
    """A paper with ``figures.py`` draws its figures from its results: ``make_figures(results_dir, tier)``.
    A figure that needs data the machine lacks (a sample grid of MNIST canvases) is skipped with the reason:
    the verdicts do not depend on it."""
    from repro.data import DataError

    module = paper.hook("figures")
    if module is None:
        return
    try:
        for path in module.make_figures(root / paper.name, tier):
            console.print(f"figure: {path}")
    except DataError as err:
        console.print(f"[yellow]figures not drawn:[/] {escape(str(err))}")


# --------------------------------------------------------------------------------------------------
# check, list, config, leaderboard, bench
def committed_aggregates(paper: Paper, root: Path, tiers: tuple[str, ...] = TIERS):
    for experiment in paper.experiments.values():
        for tier in tiers:
            path = results.run_dir(paper.name, experiment.name, tier, root) / "aggregate.json"
            if path.exists():
                yield experiment, tier, path


def unjudged_aggregates(paper: Paper, root: Path) -> list[str]:
    """Aggregates under ``root/<paper>/`` that the check does not judge (not at <experiment>/<tier>/ of an
    experiment in expected.yaml): a result parked outside the gate is a problem, not a silent exception."""
    judged = {path for _, _, path in committed_aggregates(paper, root)}
    return [
        f"{path}: an aggregate that repro check does not judge (not results/{paper.name}/<experiment>/"
        "<tier>/ of an experiment in expected.yaml): move its records there, or keep them as seed records "
        "without an aggregate"
        for path in sorted((root / paper.name).rglob("aggregate.json"))
        if path not in judged
    ]


def cmd_check(args: argparse.Namespace) -> int:
    """Re-derive every committed aggregate from its records and the current expected.yaml: any field that
    differs is a problem; an unexpected miss, and a known miss that now passes, fail the check. The data sets
    are never read, so the result is the same on any machine."""
    papers = [get_paper(args.paper)] if args.paper else list(discover().values())
    tiers = (args.tier,) if args.tier else TIERS
    missed, known, problems, checked = [], [], [], 0
    judged_claims = []
    for paper in papers:
        aggregates = []
        for experiment, tier, path in committed_aggregates(paper, args.results, tiers):
            if args.rejudge:
                names = evidence_lib.record_names(experiment, path.parent)
                records = [results.read_json(path.parent / name) for name in names]
                fresh = evidence_lib.write_aggregate(paper, experiment, tier, records, args.results)
                console.print(f"re-judged {path}")
                found = []
            else:
                fresh, found = evidence_lib.rederive(paper, experiment, tier, path)
            rejudge = f"repro check {paper.name} --tier {tier} --rejudge"
            problems += [
                f"{path}: {problem}"
                + (f" (re-judge on purpose: {rejudge})" if "expected.yaml" in problem else "")
                for problem in found
            ]
            if fresh is None:
                continue
            aggregates.append(fresh)
            checked += 1
            where = f"{paper.name}/{experiment.name} [{tier}]"
            if fresh["verdict"] == MISS:
                missed.append(where)
            elif fresh["verdict"] == KNOWN_MISS:
                known.append(where)
            problems += [
                f"{where}: '{label}' is marked as a known miss in expected.yaml but now passes: "
                "remove the mark"
                for label in passing_known_misses(fresh)
            ]
        if aggregates:
            print_verdicts(paper, aggregates)
        # The claims compare the aggregates just re-derived from the committed records, so a changed record
        # that flips a claim shows here, whatever the aggregate file says.
        judged = claims_lib.judge_all(paper, {(a["experiment"], a["tier"]): a for a in aggregates}, tiers)
        print_claims(paper, judged)
        for claim in judged:
            where = f"{paper.name} claim '{claim['id']}' [{claim['tier']}]"
            if claim["verdict"] == MISS:
                missed.append(where)
            elif claim["verdict"] == KNOWN_MISS:
                known.append(where)
        problems += [
            f"{paper.name} claim '{c['id']}' [{c['tier']}] is marked as a known miss in expected.yaml but "
            "now holds: remove the mark"
            for c in claims_lib.passing_known_misses(judged)
        ]
        judged_claims += judged
        if not args.tier:
            problems += unjudged_aggregates(paper, args.results)
    for problem in problems:
        console.print(f"[red]problem:[/] {escape(problem)}")
    for miss in known:
        console.print(f"[red]MISS (known):[/] {escape(miss)}")
    for miss in missed:
        console.print(f"[red]MISS:[/] {escape(miss)}")
    console.print(
        f"checked {checked} aggregates: {len(missed)} missed, {len(known)} known misses, "
        f"{len(problems)} problems; {claims_lib.summary(judged_claims)}"
    )
    return 1 if missed or problems else 0


def print_claims(paper: Paper, judged: list[dict[str, Any]]) -> None:
    """A row per claim and tier: the statement, the compared values, the verdict."""
    if not judged:
        return
    table = Table(title=f"{paper.title} ({paper.name}): claims")
    for column in ("claim", "statement", "evidence", "values", "tier", "verdict"):
        table.add_column(column, overflow="fold")
    for claim in judged:
        verdict = claim["verdict"]
        gated = "" if claim["gated"] or verdict == "NOT RUN" else " (not gated)"
        known = f": {claim['known_miss']['why']}" if verdict == KNOWN_MISS else ""
        table.add_row(
            claim["id"],
            escape(claim["statement"]),
            escape(f"[{claim['evidence']}]"),
            escape(claim["text"]),
            claim["tier"],
            f"[{VERDICT_STYLE.get(verdict, '')}]{verdict}[/]{gated}" + escape(known),
        )
    console.print(table)


def latest_verdicts(paper: Paper, experiment: Experiment, root: Path) -> str:
    parts = []
    for tier in TIERS:
        path = results.run_dir(paper.name, experiment.name, tier, root) / "aggregate.json"
        if path.exists():
            verdict = results.read_json(path)["verdict"]
            parts.append(f"{tier}: [{VERDICT_STYLE.get(verdict, '')}]{verdict}[/]")
    if not experiment.implemented:
        return "[yellow]not implemented[/]"
    if not experiment.data_present():
        return f"[yellow]not run: data not present[/] ({experiment.data.instructions})"
    return ", ".join(parts) or "no result yet"


def cmd_list(args: argparse.Namespace) -> int:
    papers = [get_paper(args.paper)] if args.paper else list(discover().values())
    table = Table(title="repro: papers and experiments")
    for column in ("paper", "experiment", "reproduces", "tiers", "latest verdict"):
        table.add_column(column, overflow="fold")
    for paper in papers:
        for experiment in paper.experiments.values():
            table.add_row(
                paper.name,
                experiment.name,
                experiment.table or experiment.title,
                ", ".join(paper.tiers(experiment.name)) or "–",
                latest_verdicts(paper, experiment, args.results),
            )
    console.print(table)
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from repro import config

    paper = get_paper(args.paper)
    experiment = paper.experiment(args.experiment)
    resolved = config.load(paper.config_path(experiment.name, args.tier), args.overrides)
    print(config.dump(resolved), end="")
    return 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from repro import leaderboard

    for path in leaderboard.build(args.results, wandb=args.wandb):
        console.print(f"wrote {path}")
    return 0


# Benchmarks of the shared layers in repro/, run beside the papers' (``repro bench NAME`` runs one).
SHARED_BENCHES = {"lstm": "repro.lstm_bench"}


def cmd_bench(args: argparse.Namespace) -> int:
    if args.paper in SHARED_BENCHES:
        benches = {args.paper: importlib.import_module(SHARED_BENCHES[args.paper]).main}
    else:
        papers = [get_paper(args.paper)] if args.paper else list(discover().values())
        benches = {p.name: module.main for p in papers if (module := p.hook("bench"))}
        if not args.paper:
            benches.update({n: importlib.import_module(m).main for n, m in SHARED_BENCHES.items()})
    for name, bench in benches.items():
        if args.accelerator == "cpu":
            out = args.results / "bench" / f"{name}.json"
            bench(out, quick=args.quick)
        elif "accelerator" in inspect.signature(bench).parameters:
            out = args.results / "bench" / f"{name}-{args.accelerator}.json"
            bench(out, quick=args.quick, accelerator=args.accelerator)
        else:
            console.print(f"{name}: its benchmark measures the CPU only; skipped")
            continue
        console.print(f"wrote {out}")
    return 0


def cmd_figures(args: argparse.Namespace) -> int:
    paper = get_paper(args.paper)
    if paper.hook("figures") is None:
        console.print(f"[red]error:[/] {paper.name} has no figures (papers/{paper.name}/figures.py)")
        return 2
    make_figures(paper, args.tier, args.results)
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    """Run (or resume) the random search, then redraw the paper's figures, which analyse the trials and write
    each searched experiment's summary.json, and judge the summaries against expected.yaml."""
    from repro import search

    paper = get_paper(args.paper)
    failures = []
    if args.train:
        try:
            failures = search.run_search(
                paper.name,
                args.tier,
                variants=args.variant,
                trials=args.trials,
                workers=args.workers,
                storage_url=args.storage,
                seed=args.seed,
                overrides=tuple(args.overrides),
                results_root=args.results,
                report=lambda text: console.print(escape(text)),
            )
        except KeyboardInterrupt:
            console.print("[yellow]interrupted:[/] the same command resumes the search")
            return 130
    else:
        search.resolve_variants(paper, search.search_module(paper), args.variant)
    make_figures(paper, args.tier, args.results)
    aggregates = [
        payload
        for experiment in paper.experiments.values()
        if is_search_experiment(experiment.name)
        and (payload := search.aggregate(paper, experiment, args.tier, args.results)) is not None
    ]
    if aggregates:
        print_verdicts(paper, aggregates)
    else:
        console.print(
            f"no verdict yet: the analysis judges a study once it holds the {args.tier} tier's trials"
        )
    missed = [a["experiment"] for a in aggregates if a["verdict"] == MISS]
    for failure in failures:
        console.print(f"[red]search failed:[/] {escape(failure)}")
    if missed:
        console.print(f"[red]MISS[/] on gated numbers of: {', '.join(missed)}")
    return 1 if missed or failures else 0


def cmd_features(args: argparse.Namespace) -> int:
    """The one-time encoder pass of an experiment that reads cached CNN features: its config's data module
    names the caption set, the images (data.images) and the cache (data.features) it will read."""
    import torch

    from repro import config
    from repro.data import DataError

    paper = get_paper(args.paper)
    experiment = paper.experiment(args.experiment)
    overrides = [*args.overrides, *([f"data.images={args.images}"] if args.images else [])]
    resolved = config.load(paper.config_path(experiment.name, args.tier), overrides)["data"]
    data = config.import_class(resolved["class_path"])(**resolved["init_args"])
    if not hasattr(data, "cache_features"):
        raise ConfigError(
            f"{paper.name}/{experiment.name} reads no cached features ({resolved['class_path']})"
        )
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    with Progress(console=console) as bar:
        task = bar.add_task(f"{experiment.name}: VGG-19 conv5_4 on {device}", total=None)
        try:
            record = data.cache_features(
                weights=args.weights,
                batch_size=args.batch_size,
                device=device,
                workers=args.workers,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
        except DataError as err:
            console.print(f"[red]error:[/] {escape(str(err))}")
            return 2
    console.print(
        f"{record['images']} images cached in {data.feature_folder} "
        f"({record['encoded_by_this_pass']} encoded by this pass)"
    )
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    """A paper with ``sample.py`` samples from its trained models: ``main(argv) -> int`` takes the rest."""
    sampler = get_paper(args.paper).hook("sample")
    if sampler is None:
        console.print(f"[red]error:[/] {args.paper} has no sampler (papers/{args.paper}/sample.py)")
        return 2
    return sampler.main(args.args)


# --------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="repro", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=Path(os.environ.get("REPRO_RESULTS", results.RESULTS)),
        help="results folder (default: results/ of the repository, or $REPRO_RESULTS)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("list", help="papers, experiments, tiers and latest verdicts")
    p.add_argument("paper", nargs="?")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("reproduce", help="train, evaluate and judge a paper's experiments")
    p.add_argument("paper")
    p.add_argument("--experiment", "-e", action="append", help="run only this experiment (repeatable)")
    p.add_argument("--tier", "-t", choices=TIERS, default="cpu", help="smoke | cpu | full (default: cpu)")
    p.add_argument("--seeds", type=int, default=SEEDS_DEFAULT, help="number of seeds, 1..N (default: 3)")
    p.add_argument(
        "--seed",
        type=int,
        action="append",
        help="train only this seed (repeatable; instead of --seeds): e.g. the seeds the committed evidence "
        "lacks, which --evidence then combines with the committed ones",
    )
    p.add_argument("--devices", help="devices per run (more than 1 uses Lightning DDP)")
    p.add_argument("--accelerator", help="cpu | gpu | auto")
    p.add_argument("--jobs", type=int, help="seeds run at once (default: one per core on CPU)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the last interrupted run of this paper and tier: its finished seeds are kept, the "
        "others continue from their last checkpoint",
    )
    p.add_argument(
        "--all",
        action="store_true",
        help="every experiment of the paper (default: the headline experiments its expected.yaml names)",
    )
    p.add_argument(
        "--evidence",
        action="store_true",
        help="write the committed evidence under --results (developers, for a result to commit); without it "
        "a run writes to --out and leaves results/ untouched",
    )
    p.add_argument(
        "--out",
        type=Path,
        help="where this run's records go when it does not write the evidence (default: runs/results/)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override by dotted key, e.g. --set model.lr=0.3",
    )
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    p.add_argument(
        "--no-train",
        dest="train",
        action="store_false",
        help="judge the seed records already under --out (with --evidence: the committed ones) again "
        "without training",
    )
    p.set_defaults(func=cmd_reproduce)

    p = sub.add_parser("check", help="re-judge committed results against expected.yaml (non-zero on a miss)")
    p.add_argument("paper", nargs="?")
    p.add_argument("--tier", choices=TIERS)
    p.add_argument(
        "--rejudge",
        action="store_true",
        help="write every committed aggregate again from all its seed records and the current expected.yaml "
        "(after a deliberate change of expected.yaml; the change is logged in the aggregate with its date)",
    )
    p.set_defaults(func=cmd_check)

    replay.add_parser(sub)

    p = sub.add_parser("config", help="print the resolved config (every default filled in)")
    p.add_argument("paper")
    p.add_argument("experiment")
    p.add_argument("--tier", "-t", choices=TIERS, default="cpu")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("leaderboard", help="rebuild results/LEADERBOARD.md and results/leaderboard.html")
    p.add_argument("--wandb", action="store_true", help="also log the table to Weights & Biases")
    p.set_defaults(func=cmd_leaderboard)

    p = sub.add_parser("bench", help="run benchmarks; JSON under results/bench/")
    p.add_argument("paper", nargs="?", help="a paper, or a shared layer: lstm (default: all of them)")
    p.add_argument("--quick", action="store_true", help="a short run that only checks the benchmark works")
    p.add_argument(
        "--accelerator",
        choices=("cpu", "gpu"),
        default="cpu",
        help="gpu: the benchmarks that have a GPU version, written to <paper>-gpu.json (default: cpu)",
    )
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("figures", help="redraw a paper's figures (and data samples) from its records")
    p.add_argument("paper")
    p.add_argument("--tier", "-t", choices=TIERS, default="cpu", help="whose records to draw (default cpu)")
    p.set_defaults(func=cmd_figures)

    p = sub.add_parser(
        "search",
        help="the paper's random search (Optuna): run or resume its studies, analyse, judge",
        description="Random search over the hyperparameters a paper declares in papers/<paper>/search.py: "
        "one Optuna study per variant and tier, a random sampler, --trials N in total (rerun to resume).",
    )
    p.add_argument("paper")
    p.add_argument(
        "--variant", "-v", action="append", help="search this variant only (repeatable; default all)"
    )
    p.add_argument("--tier", "-t", choices=TIERS, default="cpu", help="smoke | cpu | full (default: cpu)")
    p.add_argument(
        "--trials", type=int, help="finished trials per study in all (default: the paper's for the tier)"
    )
    p.add_argument("--workers", type=int, default=1, help="trials at once, one process and one thread each")
    p.add_argument(
        "--storage",
        help="Optuna storage: an SQLAlchemy URL (postgresql://..., sqlite:///PATH) or journal:PATH "
        "(default: sqlite:///runs/<paper>/search/<tier>/optuna.db)",
    )
    p.add_argument("--seed", type=int, help="the sampler's seed, fixed when a study is created (default 0)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override for every trial (not a sampled key), fixed when a study is created",
    )
    p.add_argument(
        "--no-train",
        dest="train",
        action="store_false",
        help="analyse and judge the trial records under results/ again without running trials",
    )
    p.set_defaults(func=cmd_search)

    p = sub.add_parser(
        "features",
        help="cache the VGG-19 conv5_4 features an experiment reads (the one-time pass over your images)",
        description="Runs VGG-19 with torchvision's ImageNet weights through conv5_4 over every image of the "
        "experiment's caption set (its three splits) and writes <image>.npy where the data module reads it. "
        "Images already cached are skipped, so the same command resumes an interrupted pass.",
    )
    p.add_argument("paper")
    p.add_argument("experiment")
    p.add_argument(
        "--tier",
        "-t",
        choices=TIERS,
        default="full",
        help="the config naming the caption set (default: full)",
    )
    p.add_argument("--images", metavar="DIR", help="your copy of the images (sets data.images)")
    p.add_argument(
        "--weights",
        metavar="FILE",
        help="torchvision's vgg19-dcbb9e9d.pth (default: torch's hub cache, downloaded there when absent)",
    )
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default: 32)")
    p.add_argument("--device", help="cpu | cuda | cuda:N (default: cuda when available, else cpu)")
    p.add_argument(
        "--workers", type=int, default=0, help="processes decoding images (default: 0, in the main one)"
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override, e.g. --set data.features=/big/disk/flickr8k_vgg19",
    )
    p.set_defaults(func=cmd_features)

    p = sub.add_parser("sample", help="sample text from a trained model; PAPER --help lists its options")
    p.add_argument("paper")
    p.add_argument("args", nargs=argparse.REMAINDER, help="the paper's sampler options")
    p.set_defaults(func=cmd_sample)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, ExpectedError, ConfigError) as err:
        console.print(f"[red]error:[/] {escape(str(err))}")
        return 2
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        return 130


if __name__ == "__main__":
    sys.exit(main())
