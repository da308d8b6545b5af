"""Tests for repro/leaderboard.py: rows from fake aggregates and a fake paper, and the pages built on them."""

import json
from html.parser import HTMLParser

import pytest

from repro import leaderboard
from repro.leaderboard import README_END, README_START, build, collect, summary, sync_readmes
from repro.papers import discover

EXPECTED_YAML = """
paper: {title: "A Toy Paper", authors: [A. Author], year: 2015, arxiv: "0000.00000"}
selection: {rule: best, by: val_entropy, mode: min}
experiments:
  good:
    title: "Good experiment"
    metrics:
      - {key: acc, label: "accuracy <top-1>", published: 100.0, source: "Table 1", evidence: paper,
         direction: higher, tolerance: {abs: 0}, gate: [cpu]}
      - {key: ppl, label: "perplexity", published: 1.27, source: "Table 1", evidence: unverified,
         direction: lower, tolerance: {rel: 0.1}, aggregate: selected, note: "read off a plot"}
  bad:
    title: "Bad experiment"
    metrics:
      - {key: acc, label: "accuracy", published: 90.0, source: "Table 2", evidence: code,
         direction: higher, tolerance: {abs: 1}, gate: [cpu]}
  needs_data:
    title: "Needs a corpus"
    data:
      {name: toy, files: [train.txt, test.txt], instructions: "copy toy/ from the lab share"}
    metrics:
      - {key: acc, label: "accuracy", published: 50.0, source: "Table 3", evidence: paper,
         direction: higher, tolerance: {abs: 0}, gate: [cpu]}
  later:
    title: "Not implemented"
    implemented: false
    metrics:
      - {key: bleu, label: "BLEU", published: 30.0, source: "Table 4", evidence: secondary,
         direction: higher, tolerance: {abs: 0.5}, gate: []}
  pending:
    title: "Implemented, never run"
    metrics:
      - {key: acc, label: "accuracy", published: 70.0, source: "Table 5", evidence: paper,
         direction: higher, tolerance: {abs: 0}, gate: []}
"""

HARDWARE = {"cpu_count": 2, "processor": "Intel Xeon", "accelerator": "cpu", "devices": 1}


def metric_entry(key, label, published, evidence, verdict, text, gated=True):
    # The exact per-metric layout the CLI writes into aggregate.json.
    return {
        "key": key,
        "label": label,
        "published": published,
        "evidence": evidence,
        "source": "Table 1",
        "direction": "higher",
        "tolerance": {"abs": 0.0},
        "aggregate": "selected",
        "gated": gated,
        "values": [100.0, 96.5, 100.0],
        "seeds": [1, 2, 3],
        "mean": 98.8,
        "std": 2.0,
        "selected": 100.0,
        "k": 2,
        "n": 3,
        "reproduced": 100.0,
        "text": text,
        "verdict": verdict,
    }


def write_aggregate(root, paper, experiment, tier, metrics, verdict, wall_time_s):
    path = root / paper / experiment / tier / "aggregate.json"
    path.parent.mkdir(parents=True)
    path.write_text(
        json.dumps(
            {
                "paper": paper,
                "experiment": experiment,
                "tier": tier,
                "selection": {"rule": "best", "by": "val_entropy", "mode": "min", "selected_seed": 2},
                "metrics": metrics,
                "verdict": verdict,
                "hardware": HARDWARE,
                "wall_time_s": wall_time_s,
                "records": ["seed1.json", "seed2.json", "seed3.json"],
                "updated_at": "2026-11-25T19:00:00+00:00",
            }
        )
    )
    return path


@pytest.fixture
def papers(tmp_path):
    folder = tmp_path / "papers" / "toy"
    folder.mkdir(parents=True)
    (folder / "expected.yaml").write_text(EXPECTED_YAML)
    return discover(tmp_path / "papers")


@pytest.fixture
def results(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_DATA", str(tmp_path / "data"))  # empty: toycorpus is absent
    root = tmp_path / "results"
    good = [
        metric_entry(
            "acc",
            "accuracy <top-1>",
            100.0,
            "paper",
            "PASS",
            "100.0 (selected seed); 98.8 ± 2.0 over 3 seeds; 2/3 seeds reach it",
        ),
        metric_entry("ppl", "perplexity", 1.27, "unverified", "SHOWN", "1.3 (selected seed)", gated=False),
    ]
    write_aggregate(root, "toy", "good", "cpu", good, "PASS", 252.0)
    write_aggregate(root, "toy", "good", "smoke", good[:1], "PASS", 4.25)
    bad = [metric_entry("acc", "accuracy", 90.0, "code", "MISS", "80.0")]
    write_aggregate(root, "toy", "bad", "cpu", bad, "MISS", 7384.0)
    return root


def by_id(rows):
    return {(r["experiment"], r["key"], r["tier"]): r for r in rows}


# -----------------------------------------------------------------------------
# collect


def test_collect_rows_from_aggregates(results, papers):
    rows = leaderboard.collect(results, papers)
    assert all(set(r) == set(leaderboard.COLUMNS) for r in rows)
    assert by_id(rows)[("good", "acc", "cpu")] == {
        "paper": "toy",
        "paper_title": "A Toy Paper",
        "experiment": "good",
        "title": "Good experiment",
        "label": "accuracy <top-1>",
        "key": "acc",
        "published": 100.0,
        "evidence": "paper",
        "reproduced": "100.0 (selected seed); 98.8 ± 2.0 over 3 seeds; 2/3 seeds reach it",
        "verdict": "PASS",
        "gated": True,
        "tier": "cpu",
        "hardware": "2-core Intel Xeon",
        "wall_time_s": 252.0,
        "link": "toy/good/cpu/aggregate.json",
        "note": "",
    }
    ppl = by_id(rows)[("good", "ppl", "cpu")]
    assert (ppl["verdict"], ppl["gated"], ppl["note"]) == ("SHOWN", False, "read off a plot")
    bad = by_id(rows)[("bad", "acc", "cpu")]
    assert (bad["verdict"], bad["reproduced"], bad["link"]) == ("MISS", "80.0", "toy/bad/cpu/aggregate.json")


def test_collect_order_is_yaml_order_then_tier(results, papers):
    rows = leaderboard.collect(results, papers)
    assert [(r["experiment"], r["tier"], r["key"]) for r in rows] == [
        ("good", "smoke", "acc"),
        ("good", "cpu", "acc"),
        ("good", "cpu", "ppl"),
        ("bad", "cpu", "acc"),
        ("needs_data", "", "acc"),
        ("later", "", "bleu"),
        ("pending", "", "acc"),
    ]


def test_absent_data_is_not_run_with_instructions(results, papers):
    row = by_id(leaderboard.collect(results, papers))[("needs_data", "acc", "")]
    assert row["verdict"] == "NOT RUN"
    assert row["note"] == "not run: data not present — copy toy/ from the lab share"
    assert (row["gated"], row["link"], row["reproduced"]) == (False, "", "")


def test_partial_data_is_still_not_run_and_full_data_is_no_result(results, papers, tmp_path):
    (tmp_path / "data" / "toy").mkdir(parents=True)
    (tmp_path / "data" / "toy" / "train.txt").write_text("x")
    assert by_id(leaderboard.collect(results, papers))[("needs_data", "acc", "")]["verdict"] == "NOT RUN"
    (tmp_path / "data" / "toy" / "test.txt").write_text("x")
    # Data present but nothing committed: still never PASS.
    assert by_id(leaderboard.collect(results, papers))[("needs_data", "acc", "")]["verdict"] == "NO RESULT"


def test_not_implemented_and_no_result(results, papers):
    rows = by_id(leaderboard.collect(results, papers))
    later = rows[("later", "bleu", "")]
    assert (later["verdict"], later["published"], later["evidence"]) == ("NOT IMPLEMENTED", 30.0, "secondary")
    assert rows[("pending", "acc", "")]["verdict"] == "NO RESULT"


def test_aggregate_of_unknown_experiment_is_kept(results, papers):
    metrics = [metric_entry("acc", "accuracy", 1.0, "paper", "PASS", "1.0")]
    write_aggregate(results, "toy", "retired", "cpu", metrics, "PASS", 1.0)
    row = by_id(leaderboard.collect(results, papers))[("retired", "acc", "cpu")]
    assert row["verdict"] == "PASS"
    assert row["title"] == ""
    assert "no longer in expected.yaml" in row["note"]


def test_empty_results_folder(tmp_path, papers, monkeypatch):
    monkeypatch.setenv("REPRO_DATA", str(tmp_path / "data"))
    rows = leaderboard.collect(tmp_path / "nothing", papers)
    assert [r["verdict"] for r in rows] == [
        "NO RESULT",
        "NO RESULT",
        "NO RESULT",
        "NOT RUN",
        "NOT IMPLEMENTED",
        "NO RESULT",
    ]


# -----------------------------------------------------------------------------
# formatting


@pytest.mark.parametrize(
    "seconds, text",
    [
        (None, "–"),
        (4.25, "4.2 s"),
        (59.0, "59.0 s"),
        (60.0, "1 min 0 s"),
        (252.0, "4 min 12 s"),
        (7384.0, "2 h 3 min"),
    ],
)
def test_human_time(seconds, text):
    assert leaderboard.human_time(seconds) == text


def test_published_text_keeps_exact_value():
    assert leaderboard.published_text({"published": 1.27, "evidence": "unverified"}) == "1.27 [unverified]"
    assert leaderboard.published_text({"published": 100, "evidence": "paper"}) == "100.0 [paper]"
    assert leaderboard.published_text({"published": None, "evidence": "paper"}) == "– [paper]"


# -----------------------------------------------------------------------------
# pages


def test_markdown(results, papers):
    md_path, _ = leaderboard.build(results, papers=papers)
    assert md_path == results / "LEADERBOARD.md"
    text = md_path.read_text()
    lines = text.splitlines()
    assert lines[0] == "# Leaderboard"
    assert (
        lines[2] == "**Summary:** 7 metric rows: 2 PASS, 1 MISS, 1 SHOWN, 1 NOT RUN, 1 NOT IMPLEMENTED, "
        "1 NO RESULT."
    )
    assert "## toy — A Toy Paper" in lines
    header = (
        "| experiment | metric | published | reproduced | verdict | tier | hardware | wall time | "
        "aggregate | note |"
    )
    assert header in lines
    assert (
        "| good | accuracy &lt;top-1&gt; | 100.0 [paper] | 100.0 (selected seed); 98.8 ± 2.0 over 3 seeds; "
        "2/3 seeds reach it | **PASS** | cpu | 2-core Intel Xeon | 4 min 12 s | "
        "[aggregate.json](toy/good/cpu/aggregate.json) |  |"
    ) in lines
    assert (
        "| bad | accuracy | 90.0 [code] | 80.0 | **MISS** | cpu | 2-core Intel Xeon | 2 h 3 min | "
        "[aggregate.json](toy/bad/cpu/aggregate.json) |  |"
    ) in lines
    assert (
        "| needs_data | accuracy | 50.0 [paper] | – | **NOT RUN** | – | – | – | – | "
        "not run: data not present — copy toy/ from the lab share |"
    ) in lines
    assert "[unverified] number never gates" in text
    # The linked file exists relative to the page.
    assert (md_path.parent / "toy/good/cpu/aggregate.json").exists()


def test_pages_are_deterministic(results, papers):
    md_path, html_path = leaderboard.build(results, papers=papers)
    first = md_path.read_bytes(), html_path.read_bytes()
    leaderboard.build(results, papers=papers)
    assert (md_path.read_bytes(), html_path.read_bytes()) == first


def test_markdown_escapes_pipes(tmp_path):
    row = dict.fromkeys(leaderboard.COLUMNS, "")
    row.update(
        paper="p",
        experiment="e",
        label="a | b",
        published=1.0,
        evidence="paper",
        verdict="SHOWN",
        wall_time_s=None,
        gated=False,
    )
    leaderboard.write_markdown([row], tmp_path / "x.md")
    assert "| e | a \\| b | 1.0 [paper] |" in (tmp_path / "x.md").read_text()


class TagChecker(HTMLParser):
    """Records parse problems (an end tag that does not close the innermost open element) and, for the rows
    tables (one per paper), their rows, aggregate links and verdict cells; and every image source."""

    VOID = {"meta", "input", "br", "hr", "img", "link"}
    VERDICT_CLASSES = {"pass", "miss", "shown", "amber"}

    def __init__(self):
        super().__init__()
        self.stack, self.errors, self.rows, self.links, self.verdicts, self.images = [], [], 0, [], {}, []
        self._cell = None
        self._in_row = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "tr":
            self._in_row = "data-verdict" in attrs  # a row of a paper's section, not a summary table's
            self.rows += self._in_row
        if tag == "a" and self._in_row:
            self.links.append(attrs["href"])
        if tag == "td" and self._in_row and attrs.get("class") in self.VERDICT_CLASSES:
            self._cell = attrs["class"]
        if tag == "img":
            self.images.append(attrs)
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag == "tr":
            self._in_row = False
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}> with open {self.stack}")
        else:
            self.stack.pop()

    def handle_data(self, data):
        if self._cell:
            self.verdicts[data] = self._cell
            self._cell = None


def test_html(results, papers):
    (results / "toy" / "curve.png").write_bytes(b"\x89PNG\r\n\x1a\n")  # only the name matters here
    _, html_path = leaderboard.build(results, papers=papers)
    assert html_path == results / "leaderboard.html"
    text = html_path.read_text()
    checker = TagChecker()
    checker.feed(text)
    checker.close()
    assert checker.errors == []
    assert checker.stack == []
    assert checker.rows == 7
    assert sorted(checker.links) == [
        "toy/bad/cpu/aggregate.json",
        "toy/good/cpu/aggregate.json",
        "toy/good/cpu/aggregate.json",
        "toy/good/smoke/aggregate.json",
    ]
    assert checker.verdicts == {
        "PASS": "pass",
        "MISS": "miss",
        "SHOWN": "shown",
        "NOT RUN": "amber",
        "NOT IMPLEMENTED": "amber",
        "NO RESULT": "amber",
    }
    assert "<td>accuracy &lt;top-1&gt;</td>" in text
    assert "<top-1>" not in text
    assert "not run: data not present — copy toy/ from the lab share" in text
    # Self-contained: no external scripts, stylesheets or fonts; the one image is a relative link to a file of
    # results/ (never embedded), loaded lazily.
    assert "http://" not in text and "https://" not in text and "<link" not in text and "data:" not in text
    assert [(i["src"], i["loading"]) for i in checker.images] == [("toy/curve.png", "lazy")]
    assert text.count("src=") == 1
    assert 'id="filter"' in text


# -----------------------------------------------------------------------------
# W&B


@pytest.mark.parametrize(
    "env, mode",
    [
        ({"WANDB_MODE": "disabled", "WANDB_API_KEY": "x"}, "disabled"),
        ({"WANDB_API_KEY": "x"}, "online"),
        ({}, "offline"),
    ],
)
def test_wandb_mode(monkeypatch, env, mode):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert leaderboard.wandb_mode() == mode


def test_log_wandb_disabled(results, papers, monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    leaderboard.log_wandb(leaderboard.collect(results, papers))


def test_sync_readmes_rewrites_only_between_the_markers(results, papers, tmp_path):
    """The paper README gets every row, the top README one line per paper; text outside the markers stays."""
    paper_readme = papers["toy"].folder / "README.md"
    paper_readme.write_text(f"# Toy\n\nbefore\n{README_START}\nstale table\n{README_END}\nafter\n")
    top_readme = tmp_path / "README.md"  # results_root.parent is the repository root
    top_readme.write_text(f"intro\n{README_START}\n{README_END}\noutro\n")
    rows = collect(results, papers)
    sync_readmes(rows, papers, results)
    text = paper_readme.read_text()
    assert text.startswith("# Toy\n\nbefore\n") and text.endswith(f"{README_END}\nafter\n")
    assert "stale table" not in text
    assert "[aggregate.json](../../results/toy/" in text  # links lead from the paper folder to results/
    assert f"Generated from `results/` by `make leaderboard`. {summary(rows)}." in text
    top = top_readme.read_text()
    assert top.startswith("intro\n") and top.endswith(f"{README_END}\noutro\n")
    assert f"| [toy](papers/toy/README.md) | {rows[0]['paper_title']} | {summary(rows)} |" in top


def test_build_leaves_readmes_alone_outside_the_repository(results, papers, tmp_path):
    readme = papers["toy"].folder / "README.md"
    readme.write_text(f"{README_START}\nkept\n{README_END}\n")
    build(results, papers=papers)
    assert readme.read_text() == f"{README_START}\nkept\n{README_END}\n"
