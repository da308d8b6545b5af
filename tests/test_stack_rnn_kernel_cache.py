"""The compiled Stack RNN kernel is loaded only when it is the file this suite built."""

from __future__ import annotations

import os
import shutil

import pytest

from papers.stack_rnn import kernel

pytestmark = pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler on this machine")


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_CACHE", str(tmp_path))
    kernel.library.cache_clear()
    yield tmp_path / "kernels"
    kernel.library.cache_clear()


def test_a_replaced_library_is_rebuilt_not_loaded(own_cache):
    assert kernel.library() is not None
    (built,) = own_cache.glob("stack_kernel-*.so")
    assert kernel.verified(built)
    original = built.read_bytes()
    # Swapped for other code (a new file in its place: the loaded library stays mapped from the old one).
    swapped = built.with_suffix(".swap")
    swapped.write_bytes(b"not the library this suite built")
    os.replace(swapped, built)
    assert not kernel.verified(built)
    kernel.library.cache_clear()
    assert kernel.library() is not None
    assert kernel.verified(built) and built.read_bytes() == original  # the same source builds the same file


def test_a_library_without_its_recorded_digest_is_rebuilt(own_cache):
    assert kernel.library() is not None
    (built,) = own_cache.glob("stack_kernel-*.so")
    kernel.digest_path(built).unlink()
    kernel.library.cache_clear()
    assert kernel.library() is not None
    assert kernel.verified(built)
