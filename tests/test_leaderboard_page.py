"""Tests for the HTML leaderboard page (repro/leaderboard.py): the per-paper summary cards (verdict counts by
tier, headline numbers, main figure, links), the misses and their causes, rows grouped by paper with gated
rows first; and, in headless Chromium where one is installed, that the page's filters, summary and figure
work."""

import shutil
import struct
import subprocess
import zlib
from html.parser import HTMLParser

import pytest

from repro import leaderboard
from repro.papers import discover
from tests.test_leaderboard import metric_entry, write_aggregate

# "main" is the headline experiment and gates; "side" (listed first) does not; "hard" is a known miss at full.
TOY_YAML = """
paper: {title: "A Toy Paper", authors: [A. Author, B. Author, C. Author], year: 2015, arxiv: "0000.00000"}
selection: {rule: best, by: val_entropy, mode: min}
headline: [main]
experiments:
  side:
    title: "Side experiment"
    metrics:
      - {key: acc, label: "side accuracy", published: 80.0, source: "Table 2", evidence: paper,
         direction: higher, tolerance: {abs: 0}, gate: []}
  main:
    title: "Main experiment"
    metrics:
      - {key: acc, label: "accuracy", published: 100.0, source: "Table 1", evidence: paper,
         direction: higher, tolerance: {abs: 0}, gate: [cpu]}
      - {key: loss, label: "loss", published: 1.5, source: "Table 1", evidence: paper,
         direction: lower, tolerance: {abs: 0}, gate: []}
  hard:
    title: "Hard experiment"
    metrics:
      - {key: err, label: "test error %", published: 1.0, source: "Table 3", evidence: secondary,
         direction: lower, tolerance: {abs: 0.1}, gate: [full]}
  later:
    title: "Not implemented"
    implemented: false
    metrics:
      - {key: bleu, label: "BLEU", published: 30.0, source: "Table 4", evidence: paper,
         direction: higher, tolerance: {abs: 0.5}, gate: []}
"""
# A paper with no published value at all: its card shows what was measured.
PLAIN_YAML = """
paper: {title: "Plain Paper", authors: [D. Author], year: 2014, arxiv: "0000.00001"}
selection: {rule: mean}
experiments:
  only:
    title: "Only experiment"
    metrics:
      - {key: ppl, label: "perplexity", published: null, source: "not transcribed", evidence: paper,
         direction: lower, tolerance: {abs: 0}, gate: [], aggregate: mean}
"""
WHY = "the learning rate vanishes before the curve flattens"


def tiny_png(width=3, height=2) -> bytes:
    """A valid RGB PNG of the given size (raw bytes, no imaging library)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + b"\x20\x80\xe0" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


@pytest.fixture
def papers(tmp_path):
    for name, text in (("toy", TOY_YAML), ("plain", PLAIN_YAML)):
        folder = tmp_path / "papers" / name
        folder.mkdir(parents=True)
        (folder / "expected.yaml").write_text(text)
    (tmp_path / "papers" / "toy" / "README.md").write_text("# Toy\n")
    return discover(tmp_path / "papers")


@pytest.fixture
def results(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_DATA", str(tmp_path / "data"))
    root = tmp_path / "results"
    side = [metric_entry("acc", "side accuracy", 80.0, "paper", "SHOWN", "79.0", gated=False)]
    write_aggregate(root, "toy", "side", "cpu", side, "SHOWN", 10.0)
    main = [
        metric_entry("acc", "accuracy", 100.0, "paper", "PASS", "100.0 (selected seed)"),
        metric_entry("loss", "loss", 1.5, "paper", "SHOWN", "1.6", gated=False),
    ]
    write_aggregate(root, "toy", "main", "cpu", main, "PASS", 20.0)
    write_aggregate(root, "toy", "main", "smoke", [dict(main[0], gated=False, verdict="SHOWN")], "SHOWN", 1.0)
    hard = [metric_entry("err", "test error %", 1.0, "secondary", "MISS (known)", "2.26")]
    hard[0]["known_miss"] = {"why": WHY, "since": "abc1234"}
    write_aggregate(root, "toy", "hard", "full", hard, "MISS (known)", 30.0)
    plain = [metric_entry("ppl", "perplexity", None, "paper", "SHOWN", "116.2 ± 0.4", gated=False)]
    write_aggregate(root, "plain", "only", "cpu", plain, "SHOWN", 5.0)
    (root / "toy" / "b_curve.png").write_bytes(tiny_png())
    (root / "toy" / "a_other.png").write_bytes(tiny_png(4, 4))
    return root


class Dom(HTMLParser):
    """What the tests read from a page (as written, or as Chromium dumped it after the script ran)."""

    VOID = {"meta", "input", "br", "hr", "img", "link"}

    def __init__(self, text):
        super().__init__()
        self.stack, self.rows, self.sections, self.images, self.cards = [], [], {}, [], {}
        self.text_of = {}  # element id -> its text
        self._ids = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        section = next((s for s in reversed(self.stack) if s[0] == "section"), None)
        if tag == "tr" and "data-verdict" in attrs:
            self.rows.append({**attrs, "paper": section[1]["data-paper"], "cells": []})
        if tag == "section":
            self.sections[attrs["data-paper"]] = attrs
        if tag == "div" and "card" in (attrs.get("class") or ""):
            self.cards[attrs["data-paper"]] = attrs
        if tag == "img":
            self.images.append(attrs)
        if tag not in self.VOID:
            self.stack.append((tag, attrs))
            if "id" in attrs:
                self.text_of[attrs["id"]] = ""
                self._ids.append(attrs["id"])

    def handle_endtag(self, tag):
        while self.stack:
            open_tag, attrs = self.stack.pop()
            if "id" in attrs and self._ids and self._ids[-1] == attrs["id"]:
                self._ids.pop()
            if open_tag == tag:
                break

    def handle_data(self, data):
        for element_id in self._ids:
            self.text_of[element_id] += data
        if self.rows and any(t == "tr" for t, _ in self.stack) and self.stack[-1][0] == "td":
            self.rows[-1]["cells"].append(data)


def build(results, papers):
    _, page = leaderboard.build(results, papers=papers)
    return page


# -----------------------------------------------------------------------------
# The page as written


def test_rows_grouped_by_paper_gated_first(results, papers):
    dom = Dom(build(results, papers).read_text())
    assert list(dom.sections) == ["plain", "toy"]
    toy = [
        (r["cells"][0], r["cells"][1], r["data-tier"], r["data-verdict"])
        for r in dom.rows
        if r["paper"] == "toy"
    ]
    assert toy == [
        ("main", "accuracy", "cpu", "PASS"),  # gated rows first, in table order
        ("hard", "test error %", "full", "MISS (known)"),
        ("side", "side accuracy", "cpu", "SHOWN"),  # then the other rows with an aggregate
        ("main", "accuracy", "smoke", "SHOWN"),
        ("main", "loss", "cpu", "SHOWN"),
        ("later", "BLEU", "none", "NOT IMPLEMENTED"),  # then experiments without one
    ]
    assert [r.get("class") for r in dom.rows if r["paper"] == "toy"][:3] == ["gated", "gated", None]


def test_headline_rows_prefer_gated_then_headline_experiments(results, papers):
    rows = leaderboard.collect(results, papers)
    groups = leaderboard._by_paper(rows)
    chosen = leaderboard.headline_rows(groups["toy"], papers["toy"])
    assert [(r["experiment"], r["key"], r["tier"]) for r in chosen] == [
        ("main", "acc", "cpu"),  # gated, the headline experiment first
        ("hard", "err", "full"),
        ("main", "loss", "cpu"),  # then published values: headline experiment, with a result
        ("side", "acc", "cpu"),
        ("later", "bleu", ""),  # without a result last; never the smoke tier, one tier per metric
    ]
    # No published value anywhere: what was measured.
    plain = leaderboard.headline_rows(groups["plain"], papers["plain"])
    assert [(r["experiment"], r["key"]) for r in plain] == [("only", "ppl")]


def test_headline_rows_are_capped(results, papers, monkeypatch):
    monkeypatch.setattr(leaderboard, "HEADLINE_ROWS", 3)
    group = leaderboard._by_paper(leaderboard.collect(results, papers))["toy"]
    assert len(leaderboard.headline_rows(group, papers["toy"])) == 3  # the 2 gated rows and 1 more


def test_card_summary_figure_and_links(results, papers):
    text = build(results, papers).read_text()
    dom = Dom(text)
    assert set(dom.cards) == {"toy", "plain"}
    card = dom.text_of["paper-toy"]
    assert "A. Author et al. (2015)" in card
    assert leaderboard.summary(leaderboard._by_paper(leaderboard.collect(results, papers))["toy"]) in card
    # Verdict counts by tier: a row per tier present, "no aggregate" for the experiments without one.
    assert '<tr data-tier="full"><td>full</td>' in text
    assert "<td>no aggregate</td>" in text
    # Headline: published vs reproduced.
    assert '<td>100.0 [paper]</td><td class="reproduced">100.0 (selected seed)</td>' in text
    assert "No published number to compare against" in dom.text_of["paper-plain"]
    # Main figure: the first PNG by name (FIGURES lists nothing for "toy"), a relative, lazy link, its size.
    [image] = dom.images
    assert (image["src"], image["loading"], image["width"], image["height"]) == (
        "toy/a_other.png",
        "lazy",
        "4",
        "4",
    )
    assert "No figure committed under results/plain/." in dom.text_of["paper-plain"]
    # Links: the README relative to results/ (only where one exists), the records folder, the rows.
    assert '<a href="../papers/toy/README.md">README</a>' in text
    assert "../papers/plain/README.md" not in text
    assert '<a href="toy/">records (results/toy/)</a>' in text
    assert '<a href="#rows-toy">all rows</a>' in text


def test_main_figure_preference(results, monkeypatch):
    assert leaderboard.main_figure("toy", results).name == "a_other.png"
    monkeypatch.setitem(leaderboard.FIGURES, "toy", ("missing.png", "b_curve.png"))
    assert leaderboard.main_figure("toy", results).name == "b_curve.png"
    assert leaderboard.main_figure("plain", results) is None
    (results / "plain" / "only" / "cpu" / "deep.png").write_bytes(tiny_png())
    assert leaderboard.main_figure("plain", results).name == "deep.png"  # further down when none at the top
    assert leaderboard.png_size(results / "toy" / "b_curve.png") == (3, 2)


def test_misses_with_their_reasons(results, papers):
    dom = Dom(build(results, papers).read_text())
    misses = dom.text_of["miss-table"]
    assert "hard" in misses and "MISS (known)" in misses and "2.26" in misses
    assert f"known miss (since abc1234): {WHY}" in misses


def test_filters_list_the_verdicts_and_tiers(results, papers):
    text = build(results, papers).read_text()
    for verdict in ("PASS", "MISS (known)", "SHOWN", "NOT IMPLEMENTED"):
        assert f'<input type="checkbox" name="verdict" value="{verdict}" checked>' in text
    assert 'value="MISS"' not in text  # only the verdicts present
    assert '<option value="">all tiers</option><option value="smoke">smoke (1)</option>' in text
    assert '<option value="none">no aggregate (1)</option>' in text


def test_page_is_deterministic(results, papers):
    page = build(results, papers)
    first = page.read_bytes()
    assert build(results, papers).read_bytes() == first


# -----------------------------------------------------------------------------
# In a browser

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")


def dump_dom(url, profile):
    """The DOM after the page's script ran, as headless Chromium serialises it."""
    command = [
        BROWSER,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--mute-audio",
        f"--user-data-dir={profile}",
        "--window-size=1400,2000",
        "--virtual-time-budget=3000",
        "--dump-dom",
        url,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    return Dom(done.stdout)


@pytest.mark.skipif(
    BROWSER is None,
    reason="no headless browser: neither chromium nor chromium-browser is on PATH "
    "(Debian: apt-get install chromium)",
)
def test_page_in_headless_chromium(results, papers, tmp_path):
    page = build(results, papers)
    url = page.resolve().as_uri()
    total = len(leaderboard.collect(results, papers))
    plain = dump_dom(url, tmp_path / "profile")
    # The summary is on the page and every row shows before a filter is set.
    assert plain.text_of["summary"].startswith(f"Summary: {total} metric rows")
    assert "PASS" in plain.text_of["paper-toy"] and "100.0 (selected seed)" in plain.text_of["paper-toy"]
    assert plain.text_of["shown-count"] == str(total)
    assert not any("hidden" in r for r in plain.rows)
    # The figure whose file exists loaded (the script marks it once it has).
    [image] = plain.images
    assert image.get("data-loaded") == "1", image

    # Filters from the URL's hash: gated verdicts at the cpu tier leave one row, in one paper's section.
    dom = dump_dom(url + "#verdict=PASS,MISS%20(known)&tier=cpu", tmp_path / "profile")
    shown = [(r["paper"], r["data-verdict"], r["data-tier"]) for r in dom.rows if "hidden" not in r]
    assert shown == [("toy", "PASS", "cpu")]
    assert dom.text_of["shown-count"] == "1"
    assert "hidden" in dom.sections["plain"] and "hidden" not in dom.sections["toy"]
    assert "(1 of 6 rows shown)" in dom.text_of["rows-toy"]
    # The query string works too, and the text filter: "loss" matches one row of any tier.
    dom = dump_dom(url + "?q=loss", tmp_path / "profile")
    assert [r["cells"][1] for r in dom.rows if "hidden" not in r] == ["loss"]
