"""Run records and aggregates under ``results/``: atomic JSON files with full provenance.

Layout: ``results/<paper>/<experiment>/<tier>/seed<k>.json`` (one record per seed) and ``aggregate.json``
(all seeds of that experiment and tier, with the verdict). ``results/`` of the repository is the committed
evidence, written only on purpose (``repro reproduce --evidence``); a user's runs have the same layout under
``runs/results/``, outside the tracked tree. A record is written only when its run finished;
every write goes through a temporary file and ``os.replace``, so a crash never leaves half a record.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(os.environ.get("REPRO_RESULTS", ROOT / "results"))
_UMASK = os.umask(0)
os.umask(_UMASK)
TRACKED_PACKAGES = ("torch", "lightning", "torchmetrics", "wandb", "numpy", "jsonargparse", "datasets")


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes the file private; a result is an ordinary file
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, payload: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=False, default=_jsonable) + "\n")


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def run_dir(paper: str, experiment: str, tier: str, root: Path | None = None) -> Path:
    return (root or RESULTS) / paper / experiment / tier


def record_path(paper: str, experiment: str, tier: str, seed: int, root: Path | None = None) -> Path:
    return run_dir(paper, experiment, tier, root) / f"seed{seed}.json"


def load_records(paper: str, experiment: str, tier: str, root: Path | None = None) -> list[dict[str, Any]]:
    folder = run_dir(paper, experiment, tier, root)
    return [read_json(p) for p in sorted(folder.glob("seed*.json"))]


def aggregated_records(folder: Path) -> list[dict[str, Any]]:
    """The seed records an experiment's ``aggregate.json`` in ``folder`` combined (none without one): what the
    figures draw, so that a figure shows exactly the seeds its table reports."""
    aggregate = folder / "aggregate.json"
    if not aggregate.exists():
        return []
    return [read_json(folder / name) for name in read_json(aggregate)["records"]]


def git_state() -> dict[str, Any]:
    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return out.stdout.strip()

    sha = git("rev-parse", "HEAD")
    if not sha and os.environ.get("REPRO_GIT_SHA"):
        # A copy of the tree without .git (a cluster's job folder, a rented GPU machine): the sha the copy was
        # made from, as its sender states it; whether the copy had edits is unknown.
        return {"sha": os.environ["REPRO_GIT_SHA"], "dirty": None}
    # Edits to tracked code make a run "dirty"; the suite's own outputs under results/ (earlier seeds of the
    # same command writing the committed evidence, a regenerated figure) are not code and do not count.
    changed = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results")
    return {"sha": sha or None, "dirty": bool(changed)}


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    versions["python"] = platform.python_version()
    return versions


def hardware(accelerator: str = "cpu", devices: int | str = 1) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "machine": platform.machine(),
        "processor": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "accelerator": accelerator,
        "devices": devices,
        # What else ran: timings from a loaded machine are not comparable with idle ones.
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
    if torch.cuda.is_available() and accelerator in ("gpu", "cuda", "auto"):
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def hardware_label(hw: dict[str, Any]) -> str:
    """Short human label for tables: '2-core Intel Xeon ...' or the GPU names."""
    if hw.get("gpus"):
        return f"{len(hw['gpus'])}x {hw['gpus'][0]}"
    return f"{hw.get('cpu_count', '?')}-core {hw.get('processor', 'cpu')}"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
