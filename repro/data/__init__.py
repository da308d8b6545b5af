"""Data plumbing shared by every paper: the data root, checksums and verified downloads.

Loaders take a data root: ``REPRO_DATA`` when set, else ``~/.cache/repro/data``. The Makefile and ``.ci/run``
point it at ``../shared/data`` when that folder exists. A file is trusted only after its sha256 matches the
value pinned in the paper's code; a mismatch names the file, both hashes and the fix.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
from pathlib import Path


class DataError(RuntimeError):
    """Missing or corrupt data; the message says which file and how to get a good copy."""


def data_root() -> Path:
    return Path(os.environ.get("REPRO_DATA") or Path.home() / ".cache" / "repro" / "data")


def sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify(path: Path, expected_sha256: str, url: str | None = None) -> Path:
    """Return ``path`` when it exists and matches ``expected_sha256``; otherwise raise a DataError."""
    where = f" Official copy: {url}" if url else ""
    if not path.exists():
        raise DataError(
            f"data file missing: {path}. Set REPRO_DATA to the folder that holds it, or let the loader "
            f"download it.{where}"
        )
    actual = sha256(path)
    if actual != expected_sha256:
        raise DataError(
            f"checksum mismatch for {path}: expected sha256 {expected_sha256}, got {actual}. The file is "
            f"corrupt or a different version; delete it and download it again.{where}"
        )
    return path


def fetch(path: Path, expected_sha256: str, url: str) -> Path:
    """Verify ``path``; when it is absent, download ``url`` to it first (atomically) and verify that."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
                shutil.copyfileobj(response, out)
            if sha256(Path(tmp)) != expected_sha256:
                raise DataError(f"download of {url} does not match sha256 {expected_sha256}; not saved")
            os.replace(tmp, path)
        except OSError as err:
            raise DataError(
                f"cannot download {url} to {path}: {err}. Without internet, copy the file there by hand "
                f"or set REPRO_DATA to a folder that has it."
            ) from err
        finally:
            Path(tmp).unlink(missing_ok=True)
    return verify(path, expected_sha256, url)
