"""Paper discovery and the ``expected.yaml`` metafile.

Every folder ``papers/<name>/`` holding an ``expected.yaml`` is a paper: nothing to register by hand.
``expected.yaml`` is the single source of truth for what the paper published and how a run is judged:

    paper:        {title, authors, year, venue, arxiv, code, spec}
    selection:    {rule: best|mean, by: <metric key>, mode: min|max}     # how seeds combine; optional
    replay:       [{experiment, tier, seed, tolerance: {rel: x}}]        # committed seeds CI re-trains
    headline:     [<experiment>, ...]      # the default of `repro reproduce PAPER` (optional; else all)
    experiments:
      <experiment>:
        title, table                       # what the experiment reproduces
        implemented: true|false            # false: shown in tables as "not implemented"
        data: {name, files, instructions}  # optional: files under the data root the experiment needs
        selection: {...}                   # optional per-experiment override
        metrics:
          - key, label, published, source, evidence, direction, tolerance, gate, aggregate, min_k, note,
            selection (optional: this metric's own rule, e.g. rounded results picked by rounded validation),
            known_miss: {tiers, why, since}   # optional: a measured miss kept inside the gate
            two_sided: true                   # optional: agree only within the tolerance on both sides

``evidence`` is one of paper / code / secondary / unverified; an unverified number can never gate.
``tolerance`` is ``{abs: x}`` or ``{rel: x}``. ``gate`` lists the tiers at which a miss fails the check.
``aggregate`` says which number over seeds is compared: ``selected`` (the seed the selection rule picks),
``mean``, or ``k_of_n`` (how many seeds reach the published value; passes when at least ``min_k`` do).
``two_sided`` (for baselines): a value far *better* than published points to a data or protocol mismatch as
surely as one far worse, so it agrees only within the tolerance on either side.
``known_miss`` marks a gated metric whose committed result misses at the listed tiers: ``repro check``
accepts that miss, with its reason (``why``) and the commit that recorded it (``since``), and fails when the
metric starts to pass, so that the mark is removed (strict, like pytest's strict xfail). ``replay`` names
committed seed records cheap enough that ``repro replay`` re-trains them from scratch in CI and compares every
metric: exactly (``tolerance`` {rel: 0}, the default) or within a stated relative tolerance.

``deviations`` (top level, at the end of the file) is the paper's ledger of every known difference from the
paper and from the official code, one entry each::

    deviations:
      - id: batched-tbptt            # a short slug, unique in the paper
        what: ...                    # what differs
        why: ...                     # why the suite does it this way
        tiers: [cpu, full]           # the tiers it affects (non-empty subset of smoke/cpu/full)
        experiments: all             # or a list of this paper's experiment names
        effect: "measured: ..."      # its effect on the numbers: "measured: ...", "expected: ..." or
                                     # "unmeasured" (optionally "unmeasured: <why>")
        against: paper               # paper | code | both: what it deviates from
        config: {trainer.max_epochs: 20}   # optional: dotted config keys and the value the deviation implies

The README's deviations table and the leaderboard's notes are generated from it, and a test checks that the
configs of the named experiments hold each ``config`` value at the listed tiers. A deviation found in a review
and missing from the ledger is a bug.

``claims`` (top level, optional) are the paper's findings that relate experiments rather than state a number
("scheduled sampling beats the teacher-forced baseline"), one entry each::

    claims:
      - id: scheduled-beats-baseline  # a short slug, unique in the paper
        statement: ...               # the paper's claim in words
        source: Table 1              # where the paper says it
        evidence: secondary          # paper | code | secondary | unverified (an unverified claim never gates)
        tiers: [full]                # the tiers it is judged at
        gate: [full]                 # the tiers (of tiers) where a miss fails `repro check`; []: shown only
        better: {experiment: coco_scheduled, metric: BLEU-4@beam3}
        worse: {experiment: coco_baseline, metric: BLEU-4@beam3}
        margin: 0                    # the least gain that holds, in the metric's units (default 0), or
                                     # "-spread": minus std_better + std_worse (the two seed spreads)
        known_miss: {tiers, why, since}   # optional, as a metric's: a gated claim measured not to hold
        note: ...                    # optional
      - id: depth-gain-grows         # ... or, instead of better/worse/margin, a gain that grows:
        grows:                       # each pair's gain strictly larger than the one before it
          - {better: {experiment: dglstm_2, metric: ppl}, worse: {experiment: lstm_2, metric: ppl}}
          - {better: {experiment: dglstm_3, metric: ppl}, worse: {experiment: lstm_3, metric: ppl}}

A side's number is the one its committed aggregate reports for that metric key (the first entry with the key):
what the metric's verdict compares (the mean, the selected seed's value; a ``k_of_n`` metric counts seeds and
cannot be named). The gain of better over worse is better - worse for a ``higher`` metric and worse - better
for a ``lower`` one (both metrics must share the direction); a better/worse claim holds when gain >= margin.
``repro check`` judges every claim at each of its tiers where every experiment it names has an aggregate (else
"not run", never a failure); a gated claim that does not hold fails the check unless its ``known_miss`` lists
the tier, and a marked claim that holds fails it until the mark is removed. The leaderboard and each README's
claims table (between ``<!-- claims:start -->`` and ``<!-- claims:end -->``) are generated from the same
judgement (repro/claims.py).
"""

from __future__ import annotations

import difflib
import importlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
PAPERS = ROOT / "papers"
TIERS = ("smoke", "cpu", "full")
EVIDENCE = ("paper", "code", "secondary", "unverified")
AGGREGATES = ("selected", "mean", "k_of_n")
# The experiment (results folder, expected.yaml entry) of a hyperparameter search: repro/search.py writes it.
SEARCH_PREFIX = "search_"


class ExpectedError(ValueError):
    """A malformed expected.yaml: the message names the file and the field."""


def is_search_experiment(name: str) -> bool:
    """Judged from a search's summary, not trained by ``repro reproduce`` (kept here: no Optuna import)."""
    return name.startswith(SEARCH_PREFIX)


def unknown_name_error(kind: str, name: str, valid: list[str]) -> ValueError:
    # A path ("../papers/dkt") is not a name; its last part may be one.
    close = difflib.get_close_matches(name.rstrip("/").rsplit("/", 1)[-1], valid, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return ValueError(f"unknown {kind} '{name}'.{hint} Valid: {', '.join(valid) or '(none)'}")


@dataclass(frozen=True)
class Selection:
    rule: str = "mean"  # "best": keep the seed with the best `by`; "mean": average over seeds
    by: str | None = None
    mode: str = "min"


@dataclass(frozen=True)
class KnownMiss:
    tiers: tuple[str, ...]
    why: str
    since: str


@dataclass(frozen=True)
class Replay:
    """A committed seed record that CI re-trains: ``results/<paper>/<experiment>/<tier>/seed<seed>.json``."""

    experiment: str
    tier: str
    seed: int
    rel: float = 0.0  # 0: every metric bit for bit


@dataclass(frozen=True)
class Deviation:
    """One entry of a paper's deviations ledger (``deviations:`` in expected.yaml)."""

    id: str
    what: str
    why: str
    tiers: tuple[str, ...]
    experiments: tuple[str, ...]  # the experiments it affects ("all" in the file: every experiment)
    effect: str
    against: str  # paper | code | both
    config: tuple[tuple[str, Any], ...] = ()  # (dotted config key, the value the deviation implies)
    all_experiments: bool = False  # the file said "all"

    def affects(self, experiment: str, tier: str) -> bool:
        return tier in self.tiers and experiment in self.experiments


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    published: float | None
    source: str
    evidence: str
    direction: str
    tolerance: dict[str, float]
    gate: tuple[str, ...]
    aggregate: str
    min_k: int = 1
    unit: str = ""
    note: str = ""
    selection: Selection | None = None  # this metric's own seed selection (None: the experiment's)
    known_miss: KnownMiss | None = None
    two_sided: bool = False

    def gates_at(self, tier: str) -> bool:
        return tier in self.gate and self.evidence != "unverified" and self.published is not None

    def known_miss_at(self, tier: str) -> KnownMiss | None:
        return self.known_miss if self.known_miss and tier in self.known_miss.tiers else None


@dataclass(frozen=True)
class DataRequirement:
    name: str
    files: tuple[str, ...]
    instructions: str


@dataclass(frozen=True)
class Experiment:
    name: str
    title: str
    table: str
    metrics: tuple[Metric, ...]
    selection: Selection
    implemented: bool = True
    data: DataRequirement | None = None
    note: str = ""

    def data_present(self) -> bool:
        """Whether every file the experiment declares exists in ``<data root>/<data.name>/``."""
        return not self.missing_files()

    def missing_files(self) -> list[Path]:
        """The files the experiment declares that are not in ``<data root>/<data.name>/``."""
        if self.data is None:
            return []
        from repro.data import data_root

        folder = data_root() / self.data.name
        return [folder / f for f in self.data.files if not (folder / f).exists()]


@dataclass(frozen=True)
class Side:
    """One side of a claim's comparison: the number ``experiment``'s aggregate reports for ``metric``."""

    experiment: str
    metric: str  # a metric key of that experiment (its first entry with that key)


@dataclass(frozen=True)
class Pair:
    """``better`` beats ``worse``: its gain is better - worse for a higher-is-better metric, worse - better
    for a lower-is-better one (the direction both metrics' entries state)."""

    better: Side
    worse: Side
    direction: str  # higher | lower


SPREAD = "-spread"  # a claim's margin: minus the two experiments' seed spreads (std_better + std_worse)


@dataclass(frozen=True)
class Claim:
    """A relation between experiments that the paper states (``claims:`` in expected.yaml)."""

    id: str
    statement: str
    source: str
    evidence: str
    tiers: tuple[str, ...]  # the tiers it is judged at
    gate: tuple[str, ...]  # the tiers at which a miss fails the check
    pairs: tuple[Pair, ...]  # one for better/worse; two or more, in order, for grows
    grows: bool = False  # the pairs' gains must strictly increase along the list
    margin: float | str = 0.0  # better/worse: the least gain that holds (a number, or SPREAD)
    known_miss: KnownMiss | None = None
    note: str = ""

    @property
    def experiments(self) -> tuple[str, ...]:
        """Every experiment the claim compares, in the order it names them."""
        names = [side.experiment for pair in self.pairs for side in (pair.better, pair.worse)]
        return tuple(dict.fromkeys(names))

    def gates_at(self, tier: str) -> bool:
        return tier in self.gate and self.evidence != "unverified"

    def known_miss_at(self, tier: str) -> KnownMiss | None:
        return self.known_miss if self.known_miss and tier in self.known_miss.tiers else None


@dataclass(frozen=True)
class Paper:
    name: str
    folder: Path
    meta: dict[str, Any]
    experiments: dict[str, Experiment] = field(default_factory=dict)
    replay: tuple[Replay, ...] = ()
    headline: tuple[str, ...] = ()  # what `repro reproduce PAPER` runs by default (empty: every experiment)
    deviations: tuple[Deviation, ...] = ()
    claims: tuple[Claim, ...] = ()

    @property
    def title(self) -> str:
        return self.meta["title"]

    def hook(self, name: str) -> ModuleType | None:
        """The paper's optional ``papers/<paper>/<name>.py`` (``figures``, ``bench``, ``sample``, ``search``),
        imported; None when the paper has none."""
        if not (self.folder / f"{name}.py").exists():
            return None
        return importlib.import_module(f"papers.{self.name}.{name}")

    def experiment(self, name: str) -> Experiment:
        if name not in self.experiments:
            raise unknown_name_error(f"experiment of {self.name}", name, list(self.experiments))
        return self.experiments[name]

    def default_experiments(self, everything: bool = False) -> list[Experiment]:
        """What `repro reproduce PAPER` trains: the headline experiments, or (``everything``, or none named)
        every implemented one; search_<experiment> entries are judged from a search's trials, not seeds."""
        if self.headline and not everything:
            return [self.experiment(n) for n in self.headline]
        return [e for e in self.experiments.values() if e.implemented and not is_search_experiment(e.name)]

    def config_path(self, experiment: str, tier: str) -> Path:
        return self.folder / "configs" / f"{experiment}-{tier}.yaml"

    def tiers(self, experiment: str) -> list[str]:
        return [t for t in TIERS if self.config_path(experiment, t).exists()]


# libyaml's loader where PyYAML was built with it: the same safe subset, some ten times faster on the large
# expected.yaml files that every command reads.
SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def discover(root: Path = PAPERS) -> dict[str, Paper]:
    return {p.parent.name: load_paper(p.parent) for p in sorted(root.glob("*/expected.yaml"))}


def get_paper(name: str, root: Path = PAPERS) -> Paper:
    # Only the named paper's expected.yaml is read (all of them only to name the valid ones). A name is a
    # folder name, never a path: "../papers/dkt" or "/tmp/x" must not load an expected.yaml from elsewhere.
    if name.isidentifier() and (root / name / "expected.yaml").is_file():
        return load_paper(root / name)
    raise unknown_name_error("paper", name, list(discover(root)))


def load_paper(folder: Path) -> Paper:
    path = folder / "expected.yaml"
    try:
        raw = yaml.load(path.read_text(), Loader=SafeLoader)
    except yaml.YAMLError as err:
        raise ExpectedError(f"{path}: not valid YAML: {err}") from err
    check = _Checker(path)
    raw = check.mapping(raw, "")
    check.known_keys(
        raw, "", {"paper", "selection", "experiments", "replay", "headline", "deviations", "claims"}
    )
    meta = check.mapping(raw.get("paper"), "paper")
    for key in ("title", "authors", "year", "arxiv"):
        check.require(meta, key, "paper")
    default_selection = check.selection(raw.get("selection"), "selection", Selection())
    experiments_raw = check.mapping(raw.get("experiments"), "experiments")
    experiments = {}
    for name, body in experiments_raw.items():
        where = f"experiments.{name}"
        body = check.mapping(body, where)
        check.known_keys(
            body, where, {"title", "table", "metrics", "selection", "implemented", "data", "note"}
        )
        check.require(body, "title", where)
        check.require(body, "metrics", where)
        selection = check.selection(body.get("selection"), f"{where}.selection", default_selection)
        metrics = tuple(
            check.metric(m, f"{where}.metrics[{i}]", selection) for i, m in enumerate(body["metrics"])
        )
        data = None
        if body.get("data") is not None:
            d = check.mapping(body["data"], f"{where}.data")
            for key in ("name", "files", "instructions"):
                check.require(d, key, f"{where}.data")
            data = DataRequirement(d["name"], tuple(d["files"]), d["instructions"])
        experiments[name] = Experiment(
            name=name,
            title=body["title"],
            table=body.get("table", ""),
            metrics=metrics,
            selection=selection,
            implemented=bool(body.get("implemented", True)),
            data=data,
            note=body.get("note", ""),
        )
    replay = tuple(
        check.replay(entry, f"replay[{i}]", experiments) for i, entry in enumerate(raw.get("replay") or ())
    )
    headline = tuple(raw.get("headline") or ())
    for i, name in enumerate(headline):
        check.experiment_name(name, f"headline[{i}]", experiments)
    deviations = check.deviations(raw.get("deviations"), "deviations", experiments)
    claims = check.claims(raw.get("claims"), "claims", experiments)
    return Paper(
        folder.name,
        folder,
        meta,
        experiments,
        replay,
        headline=headline,
        deviations=deviations,
        claims=claims,
    )


class _Checker:
    """Validates one expected.yaml; every error names the file and the dotted field."""

    METRIC_KEYS = {
        "key",
        "label",
        "published",
        "source",
        "evidence",
        "direction",
        "tolerance",
        "gate",
        "aggregate",
        "min_k",
        "unit",
        "note",
        "selection",
        "known_miss",
        "two_sided",
    }

    def __init__(self, path: Path):
        self.path = path

    def fail(self, where: str, problem: str) -> ExpectedError:
        return ExpectedError(f"{self.path}: field '{where or '<top>'}': {problem}")

    def mapping(self, value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, f"expected a mapping, got {type(value).__name__}")
        return value

    def require(self, body: dict[str, Any], key: str, where: str) -> None:
        if body.get(key) in (None, ""):
            raise self.fail(f"{where}.{key}", "is required")

    def known_keys(self, body: dict[str, Any], where: str, valid: set[str]) -> None:
        for key in body:
            if key not in valid:
                close = difflib.get_close_matches(key, sorted(valid), n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                raise self.fail(f"{where}.{key}" if where else key, f"unknown key{hint}")

    def one_of(self, value: Any, where: str, valid: tuple[str, ...]) -> str:
        if value not in valid:
            raise self.fail(where, f"must be one of {', '.join(valid)}, got {value!r}")
        return value

    def selection(self, value: Any, where: str, default: Selection) -> Selection:
        if value is None:
            return default
        body = self.mapping(value, where)
        self.known_keys(body, where, {"rule", "by", "mode"})
        rule = self.one_of(body.get("rule", "mean"), f"{where}.rule", ("best", "mean"))
        if rule == "best":
            self.require(body, "by", where)
        mode = self.one_of(body.get("mode", "min"), f"{where}.mode", ("min", "max"))
        return Selection(rule, body.get("by"), mode)

    def metric(self, value: Any, where: str, selection: Selection) -> Metric:
        body = self.mapping(value, where)
        self.known_keys(body, where, self.METRIC_KEYS)
        for key in ("key", "label", "source", "evidence", "direction"):
            self.require(body, key, where)
        evidence = self.one_of(body["evidence"], f"{where}.evidence", EVIDENCE)
        direction = self.one_of(body["direction"], f"{where}.direction", ("higher", "lower"))
        published = body.get("published")
        # bool is an int in Python: "published: yes" must not pass as 1.0.
        if published is not None and (isinstance(published, bool) or not isinstance(published, int | float)):
            raise self.fail(f"{where}.published", f"must be a number or null, got {published!r}")
        tolerance = self.mapping(body.get("tolerance", {"abs": 0.0}), f"{where}.tolerance")
        if len(tolerance) != 1 or next(iter(tolerance)) not in ("abs", "rel"):
            raise self.fail(f"{where}.tolerance", "must be {abs: x} or {rel: x}")
        if not isinstance(next(iter(tolerance.values())), int | float) or next(iter(tolerance.values())) < 0:
            raise self.fail(f"{where}.tolerance", "must be a non-negative number")
        gate = tuple(body.get("gate") or ())
        for tier in gate:
            self.one_of(tier, f"{where}.gate", TIERS)
        if gate and evidence == "unverified":
            raise self.fail(f"{where}.gate", "an [unverified] number never gates; set gate: []")
        if gate and published is None:
            raise self.fail(f"{where}.gate", "a metric without a published value cannot gate")
        min_k = body.get("min_k", 1)
        if isinstance(min_k, bool) or not isinstance(min_k, int) or min_k < 1:
            raise self.fail(f"{where}.min_k", f"must be a whole number of seeds >= 1, got {min_k!r}")
        own = None
        if body.get("selection") is not None:
            own = self.selection(body["selection"], f"{where}.selection", selection)
        rule = own or selection
        default_aggregate = "selected" if rule.rule == "best" else "mean"
        aggregate = self.one_of(body.get("aggregate", default_aggregate), f"{where}.aggregate", AGGREGATES)
        if aggregate == "selected" and rule.rule != "best":
            raise self.fail(f"{where}.aggregate", "'selected' needs a selection rule 'best'")
        known_miss = self.known_miss(body.get("known_miss"), f"{where}.known_miss", gate, "metric")
        return Metric(
            key=body["key"],
            label=body["label"],
            published=None if published is None else float(published),
            source=body["source"],
            evidence=evidence,
            direction=direction,
            tolerance={k: float(v) for k, v in tolerance.items()},
            gate=gate,
            aggregate=aggregate,
            min_k=min_k,
            unit=body.get("unit", ""),
            note=body.get("note", ""),
            selection=own,
            known_miss=known_miss,
            two_sided=self.boolean(body.get("two_sided", False), f"{where}.two_sided"),
        )

    def known_miss(self, value: Any, where: str, gate: tuple[str, ...], what: str) -> KnownMiss | None:
        """A ``known_miss: {tiers, why, since}`` mark of a gated ``what`` (metric or claim)."""
        if value is None:
            return None
        km = self.mapping(value, where)
        self.known_keys(km, where, {"tiers", "why", "since"})
        for key in ("tiers", "why", "since"):
            self.require(km, key, where)
        tiers = tuple(km["tiers"]) if isinstance(km["tiers"], list) else (km["tiers"],)
        for tier in tiers:
            if tier not in gate:
                raise self.fail(
                    f"{where}.tiers",
                    f"'{tier}' is not a tier this {what} gates at ({', '.join(gate) or 'none'}): "
                    f"only a gated {what} can be a known miss",
                )
        return KnownMiss(tiers, str(km["why"]), str(km["since"]))

    def experiment_name(self, name: Any, where: str, experiments: dict[str, Experiment]) -> None:
        """``name`` must be an experiment of this file (replay, headline and ledger entries name them)."""
        if name not in experiments:
            close = difflib.get_close_matches(str(name), list(experiments), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise self.fail(where, f"no experiment '{name}' in this file{hint}")

    def boolean(self, value: Any, where: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(where, f"must be true or false, got {value!r}")
        return value

    def replay(self, value: Any, where: str, experiments: dict[str, Experiment]) -> Replay:
        body = self.mapping(value, where)
        self.known_keys(body, where, {"experiment", "tier", "seed", "tolerance"})
        for key in ("experiment", "tier", "seed"):
            self.require(body, key, where)
        self.experiment_name(body["experiment"], f"{where}.experiment", experiments)
        tier = self.one_of(body["tier"], f"{where}.tier", TIERS)
        seed = body["seed"]
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 1:
            raise self.fail(f"{where}.seed", f"must be a seed number >= 1, got {seed!r}")
        tolerance = self.mapping(body.get("tolerance", {"rel": 0.0}), f"{where}.tolerance")
        rel = tolerance.get("rel")
        if set(tolerance) != {"rel"} or isinstance(rel, bool) or not isinstance(rel, int | float) or rel < 0:
            raise self.fail(f"{where}.tolerance", "must be {rel: x} with x >= 0 (0: bit for bit)")
        return Replay(body["experiment"], tier, seed, float(rel))

    def slug(self, value: Any, where: str) -> str:
        if not isinstance(value, str) or not re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", value):
            raise self.fail(where, f"must be a short slug (lower case, digits, '-'), got {value!r}")
        return value

    def tier_list(self, value: Any, where: str) -> list[str]:
        if not isinstance(value, list) or not value:
            raise self.fail(where, f"must be a non-empty list of {', '.join(TIERS)}")
        for tier in value:
            self.one_of(tier, where, TIERS)
        return value

    def unique_ids(self, entries: list, where: str, what: str) -> None:
        seen: set[str] = set()
        for i, entry in enumerate(entries):
            if entry.id in seen:
                raise self.fail(f"{where}[{i}].id", f"'{entry.id}' is used by an earlier {what}")
            seen.add(entry.id)

    DEVIATION_KEYS = {"id", "what", "why", "tiers", "experiments", "effect", "against", "config"}
    EFFECT_PREFIXES = ("measured:", "expected:", "unmeasured")

    def deviations(self, value: Any, where: str, experiments: dict[str, Experiment]) -> tuple[Deviation, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            raise self.fail(where, f"expected a list of deviations, got {type(value).__name__}")
        out = [self.deviation(entry, f"{where}[{i}]", experiments) for i, entry in enumerate(value)]
        self.unique_ids(out, where, "deviation")
        return tuple(out)

    def deviation(self, value: Any, where: str, experiments: dict[str, Experiment]) -> Deviation:
        body = self.mapping(value, where)
        self.known_keys(body, where, self.DEVIATION_KEYS)
        for key in ("id", "what", "why", "tiers", "experiments", "effect", "against"):
            self.require(body, key, where)
        for key in ("id", "what", "why", "effect"):
            if not isinstance(body[key], str):
                raise self.fail(f"{where}.{key}", f"must be text, got {body[key]!r}")
        slug = self.slug(body["id"], f"{where}.id")
        tiers = self.tier_list(body["tiers"], f"{where}.tiers")
        names = body["experiments"]
        if names == "all":
            exps, every = tuple(experiments), True
        elif isinstance(names, list) and names:
            for name in names:
                self.experiment_name(name, f"{where}.experiments", experiments)
            exps, every = tuple(names), False
        else:
            raise self.fail(
                f"{where}.experiments", f"must be 'all' or a non-empty list of names, got {names!r}"
            )
        effect = body["effect"].strip()
        if not effect.startswith(self.EFFECT_PREFIXES):
            raise self.fail(
                f"{where}.effect",
                f"must start with 'measured:', 'expected:' or 'unmeasured', got {effect[:40]!r}",
            )
        against = self.one_of(body["against"], f"{where}.against", ("paper", "code", "both"))
        config = ()
        if body.get("config") is not None:
            mapping = self.mapping(body["config"], f"{where}.config")
            for key in mapping:
                section = str(key).split(".", 1)[0]
                if section not in ("model", "data", "trainer") or "." not in str(key):
                    raise self.fail(
                        f"{where}.config.{key}", "must be a dotted key under model., data. or trainer."
                    )
            config = tuple((str(k), v) for k, v in mapping.items())
        return Deviation(
            id=slug,
            what=body["what"].strip(),
            why=body["why"].strip(),
            tiers=tuple(t for t in TIERS if t in tiers),
            experiments=exps,
            effect=effect,
            against=against,
            config=config,
            all_experiments=every,
        )

    CLAIM_KEYS = {
        "id",
        "statement",
        "source",
        "evidence",
        "tiers",
        "gate",
        "better",
        "worse",
        "margin",
        "grows",
        "known_miss",
        "note",
    }
    RELATION = "a claim states 'better' and 'worse' (with an optional 'margin'), or 'grows'"

    def claims(self, value: Any, where: str, experiments: dict[str, Experiment]) -> tuple[Claim, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            raise self.fail(where, f"expected a list of claims, got {type(value).__name__}")
        out = [self.claim(entry, f"{where}[{i}]", experiments) for i, entry in enumerate(value)]
        self.unique_ids(out, where, "claim")
        return tuple(out)

    def claim(self, value: Any, where: str, experiments: dict[str, Experiment]) -> Claim:
        body = self.mapping(value, where)
        self.known_keys(body, where, self.CLAIM_KEYS)
        for key in ("id", "statement", "source", "evidence", "tiers"):
            self.require(body, key, where)
        slug = self.slug(body["id"], f"{where}.id")
        where = f"{where} (claim '{slug}')"  # every later error names the claim as well as its place
        evidence = self.one_of(body["evidence"], f"{where}.evidence", EVIDENCE)
        tiers = self.tier_list(body["tiers"], f"{where}.tiers")
        gate = body.get("gate") or []
        if not isinstance(gate, list):
            raise self.fail(f"{where}.gate", f"must be a list of tiers, got {gate!r}")
        for tier in gate:
            self.one_of(tier, f"{where}.gate", TIERS)
            if tier not in tiers:
                raise self.fail(
                    f"{where}.gate", f"'{tier}' is not a tier the claim is judged at; add it to tiers"
                )
        if gate and evidence == "unverified":
            raise self.fail(f"{where}.gate", "an [unverified] claim never gates; set gate: []")
        gate = tuple(t for t in TIERS if t in gate)
        pairwise = "better" in body or "worse" in body
        if pairwise == ("grows" in body):
            raise self.fail(where, f"{self.RELATION}, exactly one of the two")
        if pairwise:
            pairs = (self.pair(body, where, experiments, alone=False),)
            margin = self.margin(body.get("margin", 0.0), f"{where}.margin")
        else:
            if "margin" in body:
                raise self.fail(
                    f"{where}.margin", "'grows' compares its pairs' gains with each other: no margin"
                )
            grows = body["grows"]
            if not isinstance(grows, list) or len(grows) < 2:
                raise self.fail(f"{where}.grows", "must be a list of two or more {better, worse} pairs")
            pairs = tuple(self.pair(p, f"{where}.grows[{i}]", experiments) for i, p in enumerate(grows))
            if len({p.direction for p in pairs}) > 1:
                raise self.fail(f"{where}.grows", "its metrics must share one direction (higher or lower)")
            margin = 0.0
        return Claim(
            id=slug,
            statement=self.text(body["statement"], f"{where}.statement"),
            source=self.text(body["source"], f"{where}.source"),
            evidence=evidence,
            tiers=tuple(t for t in TIERS if t in tiers),
            gate=gate,
            pairs=pairs,
            grows=not pairwise,
            margin=margin,
            known_miss=self.known_miss(body.get("known_miss"), f"{where}.known_miss", gate, "claim"),
            note=self.text(body.get("note", ""), f"{where}.note"),
        )

    def text(self, value: Any, where: str) -> str:
        if not isinstance(value, str):
            raise self.fail(where, f"must be text, got {value!r}")
        return value.strip()

    def margin(self, value: Any, where: str) -> float | str:
        if value == SPREAD:
            return SPREAD
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(
                where,
                f"must be a number in the metric's units or '{SPREAD}' (minus the two seed spreads), "
                f"got {value!r}",
            )
        return float(value)

    def pair(self, value: Any, where: str, experiments: dict[str, Experiment], alone: bool = True) -> Pair:
        """``better`` and ``worse`` of a mapping: a pair of ``grows`` (``alone``: nothing else in it) or the
        claim's own."""
        body = self.mapping(value, where)
        if alone:
            self.known_keys(body, where, {"better", "worse"})
        for key in ("better", "worse"):
            if body.get(key) is None:
                raise self.fail(f"{where}.{key}", f"is required: {self.RELATION}")
        better = self.side(body["better"], f"{where}.better", experiments)
        worse = self.side(body["worse"], f"{where}.worse", experiments)
        directions = {self.metric_of(s, experiments).direction for s in (better, worse)}
        if len(directions) > 1:
            raise self.fail(
                where, "better and worse name metrics of opposite directions: a gain needs one direction"
            )
        return Pair(better, worse, directions.pop())

    def side(self, value: Any, where: str, experiments: dict[str, Experiment]) -> Side:
        body = self.mapping(value, where)
        self.known_keys(body, where, {"experiment", "metric"})
        for key in ("experiment", "metric"):
            self.require(body, key, where)
        self.experiment_name(body["experiment"], f"{where}.experiment", experiments)
        keys = list(dict.fromkeys(m.key for m in experiments[body["experiment"]].metrics))
        if body["metric"] not in keys:
            close = difflib.get_close_matches(str(body["metric"]), keys, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise self.fail(
                f"{where}.metric", f"experiment '{body['experiment']}' has no metric '{body['metric']}'{hint}"
            )
        side = Side(body["experiment"], body["metric"])
        if self.metric_of(side, experiments).aggregate == "k_of_n":
            raise self.fail(
                f"{where}.metric",
                f"'{side.metric}' is judged k_of_n: its number counts seeds, it is no value to compare",
            )
        return side

    @staticmethod
    def metric_of(side: Side, experiments: dict[str, Experiment]) -> Metric:
        return next(m for m in experiments[side.experiment].metrics if m.key == side.metric)
