"""Students for Deep Knowledge Tracing (spec §2): the authors' ASSISTments split, their simulated students,
and students generated on the fly from the paper's IRT rules (``papers.dkt.simulate``).

A student is a pair ``(q, a)`` of 1-D int64 arrays in time order: exercise ids and 0/1 correctness. A model
reads (q_t, a_t) and predicts a_{t+1} on exercise q_{t+1}, so a student with n answers gives n - 1 scored
predictions, and a student with a single answer gives none: such students are dropped, and the count is
logged.

Batches are length-bucketed: students are sorted by length and cut into groups of ``batch_size``, so a group
of 8,000-answer students never pads a group of 20-answer ones, and training visits the groups in a fresh
order each epoch. Under DDP each group is dealt out student by student (rank r takes students r, r + W, ...),
so every rank takes the same number of steps and the global batch is the paper's 100 students whatever the
device count. Parsed files are cached as Hugging Face ``datasets`` (Arrow) keyed by the file's sha256.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from papers.dkt.simulate import read_info, simulate
from repro.data import DataError, data_root, fetch
from repro.data.modules import EachEpoch, RunAwareDataModule

log = logging.getLogger(__name__)

Student = tuple[np.ndarray, np.ndarray]
DATASET = "dkt_assistments"  # folder under the data root
OFFICIAL = (
    "https://raw.githubusercontent.com/chrispiech/DeepKnowledgeTracing/"
    "5973a6ce805fec7472fc5c02d4d98989abf7f3ad/data/"
)
ASSISTMENTS_SKILLS = 124  # ids 0..123 (the code's 243 output units are a bug, spec §7.5)
SYNTHETIC_EXERCISES = 50
SYNTHETIC_TRAIN = 2000  # rows 0..1999 train, 2000..3999 test (spec §7.6: the code's split shares row 2000)


def pinned_sha256() -> dict[str, str]:
    """``path under dkt_assistments/ -> sha256`` for every file the authors ship (sha256sums.txt)."""
    lines = (Path(__file__).with_name("sha256sums.txt")).read_text().splitlines()
    return {path: digest for digest, path in (line.split() for line in lines if not line.startswith("#"))}


def data_file(relative: str, root: Path | None = None) -> Path:
    """The verified local copy of one shipped file; downloaded from the official repository when absent."""
    return fetch((root or data_root()) / DATASET / relative, pinned_sha256()[relative], OFFICIAL + relative)


# --------------------------------------------------------------------------------------------------
# Parsing, with errors that name the file and the line
class DataFormatError(DataError):
    pass


def _ints(text: str, path: Path, line: int, what: str) -> np.ndarray:
    fields = text.strip().rstrip(",").split(",")
    try:
        return np.array([int(f) for f in fields], dtype=np.int64)
    except ValueError as err:
        raise DataFormatError(f"{path}:{line}: {what} must be comma-separated integers ({err})") from None


def read_assistments(path: Path, n_skills: int = ASSISTMENTS_SKILLS) -> list[Student]:
    """Parse the authors' 3-lines-per-student format: count; skill ids (0-based); correctness 0/1."""
    lines = Path(path).read_text().splitlines()
    while len(lines) % 3 and not lines[-1].strip():  # blank lines after the last block (not an empty block's)
        lines.pop()
    if len(lines) % 3:
        raise DataFormatError(
            f"{path}:{len(lines)}: the file ends inside a student block ({len(lines)} lines is not a "
            f"multiple of 3: count, skill ids, correctness); the file is cut short or malformed"
        )
    students = []
    for start in range(0, len(lines), 3):
        line = start + 1  # 1-based line number of the block's count
        try:
            count = int(lines[start])
        except ValueError:
            raise DataFormatError(
                f"{path}:{line}: expected the number of answers of a student, got {lines[start][:40]!r}"
            ) from None
        if count <= 0:
            raise DataFormatError(f"{path}:{line}: empty sequence (a student with {count} answers)")
        q = _ints(lines[start + 1], path, line + 1, "skill ids")
        a = _ints(lines[start + 2], path, line + 2, "correctness values")
        if not len(q) == len(a) == count:
            raise DataFormatError(
                f"{path}:{line}: the student block says {count} answers but has {len(q)} skill ids and "
                f"{len(a)} correctness values"
            )
        bad = np.flatnonzero((q < 0) | (q >= n_skills))
        if len(bad):
            raise DataFormatError(
                f"{path}:{line + 1}: skill id {q[bad[0]]} out of range 0..{n_skills - 1} (field {bad[0] + 1})"
            )
        bad = np.flatnonzero((a != 0) & (a != 1))
        if len(bad):
            raise DataFormatError(
                f"{path}:{line + 2}: correctness {a[bad[0]]} is not 0 or 1 (field {bad[0] + 1})"
            )
        students.append((q, a))
    return students


def read_synthetic(path: Path, n_exercises: int = SYNTHETIC_EXERCISES) -> np.ndarray:
    """A shipped simulated-students file: one row of ``n_exercises`` 0/1 answers per student."""
    rows = []
    for line, text in enumerate(Path(path).read_text().splitlines(), start=1):
        if not text.strip():
            continue
        row = _ints(text, path, line, "answers")
        if len(row) != n_exercises or not np.isin(row, (0, 1)).all():
            raise DataFormatError(
                f"{path}:{line}: expected {n_exercises} answers of 0 or 1, got {text[:60]!r}"
            )
        rows.append(row)
    if not rows:
        raise DataFormatError(f"{path}: no students")
    return np.stack(rows)


def answers_to_students(answers: np.ndarray) -> list[Student]:
    """Simulated students all answer exercises 0..E-1 in order."""
    order = np.arange(answers.shape[1], dtype=np.int64)
    return [(order, row.astype(np.int64)) for row in answers]


def cache_root() -> Path:
    return Path(os.environ.get("REPRO_CACHE") or Path.home() / ".cache" / "repro") / "datasets"


def cached_students(path: Path, digest: str, parse) -> list[Student]:
    """``parse(path)``, kept as an Arrow dataset under the cache keyed by the file's sha256."""
    import datasets

    folder = cache_root() / f"{Path(path).stem}-{digest[:16]}"
    if not (folder / "dataset_info.json").exists():
        students = parse(path)
        table = datasets.Dataset.from_dict({"q": [q for q, _ in students], "a": [a for _, a in students]})
        tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
        table.save_to_disk(str(tmp))
        try:
            tmp.replace(folder)  # atomic: a reader sees the whole folder or none
        except OSError:  # another process cached it first
            shutil.rmtree(tmp, ignore_errors=True)
    table = datasets.load_from_disk(str(folder)).with_format("numpy")
    return [
        (np.asarray(q, dtype=np.int64), np.asarray(a, dtype=np.int64))
        for q, a in zip(table["q"], table["a"], strict=True)
    ]


# --------------------------------------------------------------------------------------------------
# Batches
def scoreable(students: list[Student], where: str) -> list[Student]:
    """Students with at least two answers (one prediction); the rest are dropped and counted in the log."""
    kept = [s for s in students if len(s[0]) >= 2]
    if len(kept) < len(students):
        log.info(
            "%s: dropped %d of %d students with a single answer",
            where,
            len(students) - len(kept),
            len(students),
        )
    return kept


def length_groups(students: list[Student], batch_size: int) -> list[list[int]]:
    """Indices of students sorted by length (stable), cut into groups of ``batch_size``."""
    order = sorted(range(len(students)), key=lambda i: len(students[i][0]))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def collate(students: list[Student], group: list[int], world: int, rank: int) -> dict[str, torch.Tensor]:
    """This rank's share of one group as padded tensors, plus the group's global count of predictions.

    ``q``/``a`` [B, T] (padding 0, never scored: ``lengths`` says where each student ends); ``index`` the
    students' positions in ``students`` (to line up baseline predictions); ``scored_global``
    lets every rank divide its summed loss by the whole group's count, so DDP's averaged gradient equals the
    single-process one exactly.
    """
    share = group[rank::world]
    lengths = torch.tensor([len(students[i][0]) for i in share], dtype=torch.int64)
    q = torch.zeros(len(share), int(lengths.max()) if len(share) else 0, dtype=torch.int64)
    a = torch.zeros_like(q)
    for row, i in enumerate(share):
        q[row, : lengths[row]] = torch.from_numpy(students[i][0])
        a[row, : lengths[row]] = torch.from_numpy(students[i][1])
    scored = sum(len(students[i][0]) - 1 for i in group)
    return {
        "q": q,
        "a": a,
        "lengths": lengths,
        "index": torch.tensor(share, dtype=torch.int64),
        "scored_global": torch.tensor(float(scored)),
    }


def cross_validation_split(
    students: list[Student], folds: int, fold: int, seed: int
) -> tuple[list[Student], list[Student]]:
    """(train, test) of ``fold``: every ``folds``-th student of a permutation seeded by ``seed`` is tested;
    a student's whole sequence stays on one side (the split is by student, never by answer)."""
    order = np.random.default_rng(seed).permutation(len(students))
    tested = set(order[fold::folds].tolist())
    return (
        [s for i, s in enumerate(students) if i not in tested],
        [s for i, s in enumerate(students) if i in tested],
    )


class DKTData(RunAwareDataModule):
    """One DKT data set with its fixed train/test split and a validation split carved from train by student.

    Args:
        source: ``assistments`` (the authors' builder_train/test.csv), ``synthetic`` (their simulated
            students, ``naive_c{concepts}_q50_s4000_v{version}.csv``) or ``generated``
            (``papers.dkt.simulate``).
        concepts: hidden concepts of the simulated students (shipped: 2 and 5; generated: 1..5).
        version: shipped version 0..19; None takes ``seed - 1``, so seeds 1..20 run the 20 versions.
        students: generated students (half train, half test, as the shipped files).
        batch_size: students per (global) minibatch; 100 in the paper.
        val_fraction: share of training students held out for early stopping (spec §7.9).
        folds: ASSISTments only: cross-validate over the union of both files instead of using the shipped
            split (the paper's protocol: 5-fold), grouped by student: fold k tests every ``folds``-th student
            of a permutation seeded by ``split_seed`` and trains on the rest. None: the shipped split.
        fold: which fold tests (0..folds-1); None takes ``seed - 1``, so seeds 1..5 run the five folds.
        split_seed: seed of the validation split, fixed so that every run seed sees the same split.
        max_students: keep only the first this-many students of each file (smoke tests).
        seed: run seed (the harness sets it): the order of training batches, and the generated data.
    """

    def __init__(
        self,
        source: str = "assistments",
        concepts: int = 5,
        version: int | None = None,
        students: int = 4000,
        batch_size: int = 100,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        max_students: int | None = None,
        seed: int = 1,
        folds: int | None = None,
        fold: int | None = None,
    ):
        super().__init__()
        if source not in ("assistments", "synthetic", "generated"):
            raise ValueError(f"data.source must be assistments, synthetic or generated, not {source!r}")
        if folds is not None:
            chosen = fold if fold is not None else seed - 1
            if source != "assistments" or folds < 2 or not 0 <= chosen < folds:
                raise ValueError(
                    f"data.folds cross-validates ASSISTments with fold 0..folds-1 (seeds 1..folds); got "
                    f"source={source!r}, folds={folds}, fold={chosen}"
                )
        self.save_hyperparameters()
        self.train: list[Student] = []
        self.val: list[Student] = []
        self.test: list[Student] = []
        self.files: list[Path] = []
        self.concept_of: np.ndarray | None = None  # hidden concept per exercise (simulated data)
        self.oracle: list[np.ndarray] | None = None  # true p(correct) of each test answer (generated data)

    # ----------------------------------------------------------------------------------------------
    @property
    def n_skills(self) -> int:
        return ASSISTMENTS_SKILLS if self.hparams.source == "assistments" else SYNTHETIC_EXERCISES

    def shipped_files(self) -> list[str]:
        hp = self.hparams
        if hp.source == "assistments":
            return ["assistments/builder_train.csv", "assistments/builder_test.csv"]
        if hp.source == "synthetic":
            version = hp.version if hp.version is not None else hp.seed - 1
            if not 0 <= version <= 19 or hp.concepts not in (2, 5):
                raise ValueError(
                    f"shipped simulated students exist for concepts 2 and 5, versions 0..19 (got concepts="
                    f"{hp.concepts}, version={version}); use data.source=generated for other settings"
                )
            stem = f"naive_c{hp.concepts}_q50_s4000_v{version}"
            return [f"synthetic/{stem}.csv", f"synthetic/info/{stem}_info.txt"]
        return []

    def prepare_data(self):
        for relative in self.shipped_files():  # verify (or download) once, before the ranks start
            data_file(relative)

    def setup(self, stage: str | None = None):
        if self.train or self.test:
            return
        hp = self.hparams
        sums = pinned_sha256()
        self.files = [data_file(r) for r in self.shipped_files()]
        if hp.source == "assistments":
            train, test = (
                cached_students(p, sums[r], read_assistments)
                for p, r in zip(self.files, self.shipped_files(), strict=True)
            )
        elif hp.source == "synthetic":
            answers = read_synthetic(self.files[0])
            self.concept_of, _ = read_info(self.files[1])
            train, test = (
                answers_to_students(answers[:SYNTHETIC_TRAIN]),
                answers_to_students(answers[SYNTHETIC_TRAIN:]),
            )
        else:
            sim = simulate(n_students=hp.students, n_concepts=hp.concepts, seed=hp.seed)
            half = hp.students // 2
            self.concept_of = sim.concept
            train, test = answers_to_students(sim.answers[:half]), answers_to_students(sim.answers[half:])
            self.oracle = list(sim.p_correct[half:])
        if hp.max_students:
            train, test = train[: hp.max_students], test[: hp.max_students]
            self.oracle = self.oracle[: hp.max_students] if self.oracle else None
        if hp.folds:
            train, test = cross_validation_split(train + test, hp.folds, self.fold, hp.split_seed)
        train = scoreable(train, "train")
        if self.oracle is None:
            test = scoreable(test, "test")  # generated students all have 50 answers: the oracle stays aligned
        held_out = np.random.default_rng(hp.split_seed).permutation(len(train))
        n_val = max(1, round(hp.val_fraction * len(train)))
        val_ids = set(held_out[:n_val].tolist())
        self.val = [s for i, s in enumerate(train) if i in val_ids]
        self.train = [s for i, s in enumerate(train) if i not in val_ids]
        self.test = test
        log.info("students: %d train, %d validation, %d test", len(self.train), len(self.val), len(self.test))

    @property
    def fold(self) -> int | None:
        """The fold this run tests (None: the shipped split)."""
        if not self.hparams.folds:
            return None
        return self.hparams.fold if self.hparams.fold is not None else self.hparams.seed - 1

    def data_files(self) -> list[Path]:
        return self.files

    # ----------------------------------------------------------------------------------------------
    def batches(self, students: list[Student], epoch: int | None = None) -> list[dict[str, torch.Tensor]]:
        """Length groups of ``students``; in a seeded fresh order per ``epoch`` when one is given."""
        world, rank = self.world
        groups = length_groups(students, self.hparams.batch_size)
        if epoch is not None:
            # Every rank takes a step on every training group, so a group of fewer students than devices
            # (possible only for the last, longest one) is left out of training; evaluation keeps it.
            short = sum(len(g) for g in groups if len(g) < world)
            if short:
                log.info(
                    "epoch %d: %d students of a group smaller than %d devices sit out", epoch, short, world
                )
            groups = [g for g in groups if len(g) >= world]
            order = np.random.default_rng([self.hparams.seed, epoch]).permutation(len(groups))
            groups = [groups[i] for i in order]
        return [collate(students, g, world, rank) for g in groups]

    def train_dataloader(self):
        return DataLoader(EachEpoch(lambda: self.batches(self.train, self.epoch)), batch_size=None)

    def val_dataloader(self):
        return DataLoader(EachEpoch(lambda: self.batches(self.val)), batch_size=None)

    def test_dataloader(self):
        return DataLoader(EachEpoch(lambda: self.batches(self.test)), batch_size=None)
