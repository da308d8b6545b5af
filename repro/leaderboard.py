"""The leaderboard: every published number next to what this suite reproduced, in one place.

:func:`collect` reads the committed ``results/<paper>/<experiment>/<tier>/aggregate.json`` files and adds
a row for every experiment of a discovered paper that has no aggregate yet (not implemented, data absent, or
simply not run), so a missing result is visible instead of silently absent. :func:`build` writes two views
of the same rows: ``results/LEADERBOARD.md`` (reviewed in git diffs, so its output is deterministic) and
``results/leaderboard.html`` (one static page: a summary card per paper with its headline numbers, its claims
and main figure, the misses with their causes, then every row grouped by paper, filterable and sortable);
:func:`collect_claims` judges every paper's claims (``claims:`` of expected.yaml, repro/claims.py) from the
same aggregates, for a claims table per paper in both views and in each paper's README. :func:`log_wandb`
sends the rows to W&B.
"""

from __future__ import annotations

import html
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

from repro import claims as claims_lib
from repro.evidence import mean_wall_seconds
from repro.papers import TIERS, Experiment, Paper, discover
from repro.results import RESULTS, ROOT, atomic_write_text, hardware_label, read_json
from repro.train import wandb_mode
from repro.verdict import KNOWN_MISS, MISS, NO_RESULT, NOT_IMPLEMENTED, NOT_RUN, PASS, SHOWN

RESULTS_IN_REPO = ROOT / "results"
VERDICTS = (
    PASS,
    MISS,
    KNOWN_MISS,
    SHOWN,
    NOT_RUN,
    NOT_IMPLEMENTED,
    NO_RESULT,
)  # the order summaries list them in
COLUMNS = (  # every row has exactly these fields; W&B gets them in this order
    "paper",
    "paper_title",
    "experiment",
    "title",
    "label",
    "key",
    "published",
    "evidence",
    "reproduced",
    "verdict",
    "gated",
    "tier",
    "hardware",
    "wall_time_s",
    "link",
    "note",
)
EXPLANATION = (
    "PASS / MISS: a gated metric agrees / disagrees with the published number within its tolerance; "
    "MISS (known): a gated miss that expected.yaml records with its measured cause (it stays in the gate, "
    "and `repro check` fails if it starts to pass); SHOWN: reported but not gated; NOT RUN: its data is not "
    "present; NOT IMPLEMENTED: the suite does not implement it; NO RESULT: no aggregate committed yet. The "
    "tag after a published number says where it comes from: [paper], [code], [secondary] or [unverified]; "
    "an [unverified] number never gates."
)
CLAIMS_EXPLANATION = (
    "A claim relates experiments (`claims:` in expected.yaml): the first beats the second by at least the "
    "margin on the numbers their aggregates report, or (grows) each pair's gain is larger than the one "
    "before. PASS / MISS: a gated claim holds / does not; MISS (known): a gated miss expected.yaml records; "
    "SHOWN: judged, not gated; NOT RUN: an experiment it compares has no aggregate at that tier."
)

# -----------------------------------------------------------------------------
# Rows


def collect(results_root: Path = RESULTS, papers: dict[str, Paper] | None = None) -> list[dict[str, Any]]:
    """A row per paper x experiment x metric x tier with an aggregate; experiments with none get rows too."""
    papers = discover() if papers is None else papers
    rows = []
    seen = set()  # (paper, experiment) pairs that have at least one aggregate, at any tier
    for path in sorted(Path(results_root).glob("*/*/*/aggregate.json")):
        agg = read_json(path)
        # The CLI writes paper/experiment/tier into the JSON; the folder names are the fallback.
        paper_name = agg.get("paper") or path.parts[-4]
        exp_name = agg.get("experiment") or path.parts[-3]
        seen.add((paper_name, exp_name))
        paper = papers.get(paper_name)
        experiment = paper.experiments.get(exp_name) if paper else None
        notes = {m.key: m.note for m in experiment.metrics} if experiment else {}
        hw = agg.get("hardware")
        tier = agg.get("tier") or path.parts[-2]
        # What every row of this aggregate adds to its note: the ledger's entries that touch this experiment
        # at this tier (README: Deviations), and when the entry it is judged against was edited after it.
        shared = []
        ids = [d.id for d in paper.deviations if d.affects(exp_name, tier)] if paper else []
        if ids:
            shared.append(f"deviations: {', '.join(ids)}")
        if changes := agg.get("expected_changes"):
            shared.append(f"expected.yaml entry changed after this result, last on {changes[-1]['at'][:10]}")
        for metric in agg.get("metrics", []):
            if experiment is None:
                own = "no longer in expected.yaml; the aggregate is kept as it was committed"
            else:
                own = notes.get(metric["key"], "")
            known = metric.get("known_miss") if metric.get("verdict") == KNOWN_MISS else None
            reason = f"known miss (since {known['since']}): {known['why']}" if known else ""
            note = "; ".join(part for part in (reason, own, *shared) if part)
            rows.append(
                {
                    "paper": paper_name,
                    "paper_title": paper.title if paper else "",
                    "experiment": exp_name,
                    "title": experiment.title if experiment else "",
                    "label": metric.get("label", metric["key"]),
                    "key": metric["key"],
                    "published": metric.get("published"),
                    "evidence": metric.get("evidence", ""),
                    "reproduced": metric.get("text", ""),
                    "verdict": metric.get("verdict", NO_RESULT),
                    "gated": bool(metric.get("gated", False)),
                    "tier": tier,
                    "hardware": hardware_label(hw) if hw else "",
                    "wall_time_s": agg.get("wall_time_s"),
                    "link": path.relative_to(results_root).as_posix(),
                    "note": note,
                }
            )
    for paper in papers.values():
        for experiment in paper.experiments.values():
            if (paper.name, experiment.name) not in seen:
                rows.extend(_missing_rows(paper, experiment))
    return sorted(rows, key=_sort_key(papers))


def collect_claims(
    results_root: Path = RESULTS, papers: dict[str, Paper] | None = None
) -> list[dict[str, Any]]:
    """Every claim of every paper judged at each of its tiers from the committed aggregates under
    ``results_root`` (repro/claims.py), with its paper's name: papers alphabetically, claims in file order."""
    papers = discover() if papers is None else papers
    return [
        {"paper": name, **claim}
        for name, paper in sorted(papers.items())
        for claim in claims_lib.judge_all(paper, claims_lib.committed(paper, Path(results_root)))
    ]


def _missing_rows(paper: Paper, experiment: Experiment) -> list[dict[str, Any]]:
    """Rows for an experiment with no aggregate: say why, one row per metric so its published values show."""
    if not experiment.implemented:
        verdict, note = NOT_IMPLEMENTED, experiment.note or "not implemented by this suite"
    elif not experiment.data_present():
        verdict, note = NOT_RUN, f"not run: data not present — {experiment.data.instructions}"
    else:
        verdict, note = NO_RESULT, "no aggregate committed yet"
    return [
        {
            "paper": paper.name,
            "paper_title": paper.title,
            "experiment": experiment.name,
            "title": experiment.title,
            "label": metric.label,
            "key": metric.key,
            "published": metric.published,
            "evidence": metric.evidence,
            "reproduced": "",
            "verdict": verdict,
            "gated": False,  # nothing was compared, so nothing gates
            "tier": "",
            "hardware": "",
            "wall_time_s": None,
            "link": "",
            "note": note,
        }
        for metric in experiment.metrics
    ]


def _sort_key(papers: dict[str, Paper]):
    # Papers alphabetically; experiments and metrics in expected.yaml order (the paper's table order), which
    # reads better than alphabetical and is just as deterministic. Unknown names sort after known ones.
    def key(row: dict[str, Any]) -> tuple:
        paper = papers.get(row["paper"])
        experiments = list(paper.experiments) if paper else []
        experiment = paper.experiments.get(row["experiment"]) if paper else None
        metrics = [m.key for m in experiment.metrics] if experiment else []
        return (
            row["paper"],
            _position(experiments, row["experiment"]),
            row["experiment"],
            _position(TIERS, row["tier"]),
            row["tier"],
            _position(metrics, row["key"]),
            row["key"],
        )

    return key


def _position(items, item) -> int:
    return list(items).index(item) if item in items else len(items)


# -----------------------------------------------------------------------------
# Formatting shared by both pages


def published_text(row: dict[str, Any]) -> str:
    # str() of a float is its shortest exact form, so 1.27 stays 1.27 instead of being rounded by fmt().
    value = "–" if row["published"] is None else str(float(row["published"]))
    return f"{value} [{row['evidence']}]" if row["evidence"] else value


def human_time(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 60:
        return f"{seconds:.1f} s"
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min {secs} s"


def summary(rows: list[dict[str, Any]]) -> str:
    counts = Counter(row["verdict"] for row in rows)
    parts = [f"{counts[v]} {v}" for v in VERDICTS if counts[v]]
    parts += [f"{counts[v]} {v}" for v in sorted(counts) if v not in VERDICTS]
    return f"{len(rows)} metric rows: " + (", ".join(parts) or "none")


def _by_paper(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row["paper"], []).append(row)
    return groups


# -----------------------------------------------------------------------------
# Markdown


def _md(text: Any) -> str:
    # A pipe would end the cell, a newline the row; '<' could open raw HTML in GitHub's renderer.
    text = str(text).replace("\n", " ").replace("|", "\\|")
    return text.replace("<", "&lt;").replace(">", "&gt;")


MD_COLUMNS = (
    "experiment",
    "metric",
    "published",
    "reproduced",
    "verdict",
    "tier",
    "hardware",
    "wall time",
    "aggregate",
    "note",
)


def markdown_table(group: list[dict[str, Any]], link_prefix: str = "") -> list[str]:
    """One paper's rows as a Markdown table; ``link_prefix`` leads from the page to results/."""
    lines = ["| " + " | ".join(MD_COLUMNS) + " |", "|" + "---|" * len(MD_COLUMNS)]
    for row in group:
        link = f"[aggregate.json]({link_prefix}{row['link']})" if row["link"] else "–"
        cells = [
            row["experiment"],
            row["label"],
            published_text(row),
            row["reproduced"] or "–",
            f"**{row['verdict']}**",
            row["tier"] or "–",
            row["hardware"] or "–",
            human_time(row["wall_time_s"]),
        ]
        lines.append("| " + " | ".join(_md(c) for c in cells) + f" | {link} | {_md(row['note'])} |")
    return lines


def claims_table(judged: list[dict[str, Any]]) -> list[str]:
    """One paper's judged claims as a Markdown table (the leaderboard's and the paper README's)."""
    lines = ["| " + " | ".join(claims_lib.COLUMNS) + " |", "|" + "---|" * len(claims_lib.COLUMNS)]
    for claim in judged:
        cells = claims_lib.cells(claim)
        cells["verdict"] = f"**{cells['verdict']}**"
        cells["claim"] = f"`{cells['claim']}`"
        lines.append("| " + " | ".join(_md(cells[c]) for c in claims_lib.COLUMNS) + " |")
    return lines


def _with_claims(text: str, judged: list[dict[str, Any]]) -> str:
    """A summary of metric rows, and of the claims where there are any."""
    return f"{text}; {claims_lib.summary(judged)}" if judged else text


def write_markdown(
    rows: list[dict[str, Any]], path: Path, judged: list[dict[str, Any]] | None = None
) -> Path:
    judged = judged or []
    lines = [
        "# Leaderboard",
        "",
        f"**Summary:** {_with_claims(summary(rows), judged)}.",
        "",
        EXPLANATION,
        "",
        "Links point to the aggregate JSON under results/. Generated by `repro.leaderboard`; do not edit.",
    ]
    for paper, group in _by_paper(rows).items():
        title = group[0]["paper_title"]
        lines += ["", f"## {_md(paper)}" + (f" — {_md(title)}" if title else ""), ""]
        lines += markdown_table(group)
        if own := [c for c in judged if c["paper"] == paper]:
            lines += ["", f"### Claims ({claims_lib.summary(own)})", "", CLAIMS_EXPLANATION, ""]
            lines += claims_table(own)
    atomic_write_text(Path(path), "\n".join(lines) + "\n")
    return Path(path)


# -----------------------------------------------------------------------------
# HTML
#
# One static page (no network: no CDN, no fonts, no embedded images) a researcher opens first: an overview
# line per paper, the misses with their causes, a card per paper (verdict counts by tier, the headline
# published vs reproduced numbers, the paper's main figure, links to its README and records), then every row
# grouped by paper, gated rows first, with filters by verdict, tier and text. Like LEADERBOARD.md it is
# committed, so the same rows and files give the same bytes.

VERDICT_CLASS = {
    PASS: "pass",
    MISS: "miss",
    KNOWN_MISS: "miss",
    SHOWN: "shown",
}  # NOT RUN, NOT IMPLEMENTED, NO RESULT: amber
NO_TIER = "none"  # the tier filter's value for rows without an aggregate (tier "")
TIER_LABELS = {NO_TIER: "no aggregate"}
HEADLINE_ROWS = 5  # rows a paper's card shows besides its gated ones
# Each paper's main figure under results/<paper>/, the first that exists; a paper not listed (or none of whose
# files exists) gets the first PNG of its folder, sorted by name, then the first one further down.
FIGURES = {
    "char_rnn": ("saturation_wp_lstm_1x128_cpu.png", "ngram_war_and_peace.png"),
    "depth_gated_lstm": ("val_ppl_2x200_full.png", "val_ppl_2x200_cpu.png"),
    "dkt": ("figure1_full.png", "figure1_cpu.png", "figure3a_cpu.png"),
    "lstm_odyssey": ("search_figure3_cpu.png", "figure3_cpu.png"),
    "ram": ("error_curve_full.png", "error_curve_cpu.png", "glimpses_mnist_ram6_cpu.png"),
    "scheduled_sampling": ("comparison_full.png", "comparison_cpu.png", "schedules_cpu.png"),
    "show_attend_tell": ("attention_mnist_soft_cpu.png", "samples.png"),
    "stack_rnn": ("figure2_full.png", "figure2_cpu.png"),
}
HTML_HEAD = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Leaderboard: published vs reproduced</title>
<style>
body { font-family: system-ui, sans-serif; margin: 1.5em 2em; color: #222; line-height: 1.4; }
h1 { margin-bottom: 0.2em; }
h2 { margin-top: 1.6em; border-bottom: 2px solid #ddd; padding-bottom: 0.2em; }
h3 { margin: 0 0 0.3em 0; }
a { color: #0645ad; }
p.explain { font-size: 13px; color: #555; max-width: 75em; }
nav.toc { font-size: 14px; margin: 0.6em 0; }
nav.toc a { margin-right: 1em; }
table { border-collapse: collapse; font-size: 14px; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
table.board { width: 100%; }
table.board th { cursor: pointer; user-select: none; }
.pass { background: #c8f0c8; }
.miss { background: #f5c2c2; }
.shown { background: #e4e4e4; }
.amber { background: #fde3a7; }
td.num { text-align: right; }
td.links { white-space: nowrap; }
td.zero { color: #bbb; text-align: right; }
span.chip { display: inline-block; padding: 0 6px; margin: 1px 2px; border-radius: 8px; font-size: 13px;
  white-space: nowrap; }
.card { display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 42%); gap: 1.2em;
  border: 1px solid #ccc; border-radius: 6px; padding: 0.8em 1em; margin: 1em 0; background: #fcfcfc; }
.card .sub { color: #555; font-size: 14px; margin-bottom: 0.5em; }
.card table { margin: 0.4em 0 0.8em 0; }
.card .links a { margin-right: 1em; }
.card .none { color: #666; font-size: 14px; font-style: italic; }
figure { margin: 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #ddd; background: #fff; }
figcaption { font-size: 12px; color: #555; }
#filters { position: sticky; top: 0; background: #fff; padding: 0.5em 0; border-bottom: 1px solid #ddd;
  z-index: 1; font-size: 14px; }
#filters label { margin-right: 0.8em; white-space: nowrap; }
#filters input[type=search] { font-size: 14px; padding: 3px; width: 22em; }
#filters select { font-size: 14px; }
section.rows h3 { margin-top: 1.2em; }
section.rows .count { font-weight: normal; color: #555; font-size: 14px; }
tr.gated td:first-child { border-left: 4px solid #333; }
td.note { font-size: 13px; color: #444; max-width: 40em; }
td.reproduced { max-width: 24em; }
@media (max-width: 900px) { .card { grid-template-columns: 1fr; } }
</style>
</head>
<body>
"""
# Filters: a row shows when its verdict is ticked, its tier is the chosen one (or all) and its text holds the
# query; a paper's section hides when none of its rows shows. The state lives in the URL's hash (or query
# string), e.g. leaderboard.html#verdict=PASS,MISS&tier=cpu&q=auc, so a filtered view can be linked to (it
# opens scrolled to the rows).
# #shown-count says how many rows show. Sort: by the clicked column within its table, numbers as numbers
# (data-sort holds a sortable value where the shown text is not, e.g. wall time); a second click reverses.
# Figures: each <img> gets data-loaded="1" once loaded ("0" when its file is missing, which is also said).
HTML_SCRIPT = """<script>
(function () {
  "use strict";
  var boxes = Array.prototype.slice.call(document.querySelectorAll("#filters input[name=verdict]"));
  var tier = document.getElementById("tier");
  var text = document.getElementById("filter");
  var sections = Array.prototype.slice.call(document.querySelectorAll("section.rows"));
  function apply() {
    var on = {};
    boxes.forEach(function (b) { if (b.checked) { on[b.value] = true; } });
    var q = text.value.toLowerCase(), t = tier.value, shown = 0, total = 0;
    sections.forEach(function (s) {
      var n = 0, rows = s.querySelectorAll("tbody tr");
      Array.prototype.forEach.call(rows, function (r) {
        var ok = on[r.dataset.verdict] === true && (t === "" || r.dataset.tier === t) &&
          (q === "" || r.textContent.toLowerCase().indexOf(q) >= 0);
        r.hidden = !ok;
        if (ok) { n += 1; }
      });
      s.hidden = n === 0;
      s.querySelector(".count").textContent = "(" + n + " of " + rows.length + " rows shown)";
      shown += n;
      total += rows.length;
    });
    document.getElementById("shown-count").textContent = String(shown);
    document.getElementById("total-count").textContent = String(total);
  }
  function state() {
    var p = [], v = boxes.filter(function (b) { return b.checked; }).map(function (b) { return b.value; });
    if (v.length !== boxes.length) { p.push("verdict=" + v.map(encodeURIComponent).join(",")); }
    if (tier.value !== "") { p.push("tier=" + encodeURIComponent(tier.value)); }
    if (text.value !== "") { p.push("q=" + encodeURIComponent(text.value)); }
    return p.join("&");
  }
  function save() {
    try { history.replaceState(null, "", location.pathname + location.search + "#" + state()); } catch (e) { }
  }
  function load() {
    var raw = location.hash.length > 1 ? location.hash.slice(1) : location.search.slice(1);
    var params = new URLSearchParams(raw);
    var verdicts = [];
    params.getAll("verdict").forEach(function (v) { verdicts = verdicts.concat(v.split(",")); });
    if (verdicts.length) {
      boxes.forEach(function (b) { b.checked = verdicts.indexOf(b.value) >= 0; });
    }
    if (params.has("tier")) { tier.value = params.get("tier"); }
    if (params.has("q")) { text.value = params.get("q"); }
    apply();
    return verdicts.length > 0 || params.has("tier") || params.has("q");
  }
  boxes.forEach(function (b) { b.addEventListener("change", function () { apply(); save(); }); });
  tier.addEventListener("change", function () { apply(); save(); });
  text.addEventListener("input", function () { apply(); save(); });
  document.getElementById("all-verdicts").addEventListener("click", function () {
    boxes.forEach(function (b) { b.checked = true; });
    tier.value = "";
    text.value = "";
    apply();
    save();
  });
  window.addEventListener("hashchange", load);
  Array.prototype.forEach.call(document.querySelectorAll("table.board"), function (table) {
    Array.prototype.forEach.call(table.querySelectorAll("th"), function (th, i) {
      th.addEventListener("click", function () {
        var dir = th.dataset.dir === "asc" ? -1 : 1;
        th.dataset.dir = dir === 1 ? "asc" : "desc";
        var body = table.tBodies[0];
        var val = function (r) {
          var c = r.children[i];
          return c.dataset.sort !== undefined ? c.dataset.sort : c.textContent;
        };
        Array.prototype.slice.call(body.rows).sort(function (a, b) {
          return dir * val(a).localeCompare(val(b), undefined, {numeric: true});
        }).forEach(function (r) { body.appendChild(r); });
      });
    });
  });
  Array.prototype.forEach.call(document.querySelectorAll("figure img"), function (img) {
    var done = function () { img.dataset.loaded = img.naturalWidth > 0 ? "1" : "0"; };
    var failed = function () {
      img.dataset.loaded = "0";
      img.alt = "figure file missing: " + img.getAttribute("src");
    };
    if (img.complete && img.naturalWidth > 0) { done(); } else {
      img.addEventListener("load", done);
      img.addEventListener("error", failed);
    }
  });
  if (load()) { document.getElementById("rows").scrollIntoView(); }  // a filtered link opens on the rows
}());
</script>
"""
ROW_COLUMNS = (
    "experiment",
    "metric",
    "published",
    "reproduced",
    "verdict",
    "gated",
    "tier",
    "hardware",
    "wall time",
    "aggregate",
    "note",
)  # a section per paper: the paper is its heading, not a column
HEADLINE_COLUMNS = ("experiment", "metric", "tier", "published", "reproduced", "verdict")


def _code(text: str) -> str:
    """`x` (Markdown code, already escaped) as <code>x</code>."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", text)


def _verdict_class(verdict: str) -> str:
    return VERDICT_CLASS.get(verdict, "amber")


def _tier_value(row: dict[str, Any]) -> str:
    return row["tier"] or NO_TIER


def _verdicts_in(rows: list[dict[str, Any]]) -> list[str]:
    present = {row["verdict"] for row in rows}
    return [v for v in VERDICTS if v in present] + sorted(present - set(VERDICTS))


def _tiers_in(rows: list[dict[str, Any]]) -> list[str]:
    present = {_tier_value(row) for row in rows}
    return sorted(present, key=lambda t: (_position([*TIERS, NO_TIER], t), t))


def page_order(group: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A paper's rows as its section lists them: gated rows, then the other rows with an aggregate, then the
    experiments without one; table order (``collect``'s) within each."""
    return sorted(group, key=lambda row: (not row["gated"], not row["tier"]))


def headline_rows(group: list[dict[str, Any]], paper: Paper | None = None) -> list[dict[str, Any]]:
    """The numbers a paper's card shows: every gated row (the paper's ``headline:`` experiments first), then,
    up to ``HEADLINE_ROWS`` rows in all, rows with a published value: headline experiments first, those with a
    result first, one tier per metric (the highest), never smoke. A paper with neither gets rows with a
    result instead."""
    headline = set(paper.headline) if paper else set()
    rank = {"full": 0, "cpu": 1, "": 3}

    def preference(row: dict[str, Any]) -> tuple:
        return (
            bool(headline) and row["experiment"] not in headline,
            not row["reproduced"],
            rank.get(row["tier"], 2),
        )

    chosen = sorted((r for r in group if r["gated"]), key=lambda r: preference(r)[0])
    seen = {(r["experiment"], r["key"]) for r in chosen}
    rest = [r for r in group if not r["gated"] and r["tier"] != "smoke"]
    pool = [r for r in rest if r["published"] is not None]
    if not pool and not chosen:
        pool = [r for r in rest if r["reproduced"]]
    limit = max(len(chosen), HEADLINE_ROWS)
    for row in sorted(pool, key=preference):
        if len(chosen) >= limit:
            break
        if (row["experiment"], row["key"]) not in seen:
            seen.add((row["experiment"], row["key"]))
            chosen.append(row)
    return chosen


def main_figure(paper: str, results_root: Path) -> Path | None:
    """The paper's figure the card shows (``FIGURES``, else the first PNG under results/<paper>/)."""
    folder = Path(results_root) / paper
    for name in FIGURES.get(paper, ()):
        if (folder / name).is_file():
            return folder / name
    found = sorted(folder.glob("*.png")) or sorted(folder.rglob("*.png"))
    return found[0] if found else None


def png_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from a PNG's header, so the page reserves the figure's space before it loads."""
    with open(path, "rb") as f:
        head = f.read(24)
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def _chips(rows: list[dict[str, Any]]) -> str:
    counts = Counter(row["verdict"] for row in rows)
    return " ".join(
        f'<span class="chip {_verdict_class(v)}">{counts[v]} {html.escape(v)}</span>'
        for v in _verdicts_in(rows)
    )


def _gate_text(group: list[dict[str, Any]]) -> str:
    gated = [row for row in group if row["gated"]]
    if not gated:
        return '<span class="none">nothing gated</span>'
    return _chips(gated)


def _paper_links(name: str, paper: Paper | None, results_root: Path, short: bool = False) -> list[str]:
    """The paper's README (relative to the page), its records folder and its section of rows."""
    e = html.escape
    links = []
    if paper is not None and (paper.folder / "README.md").is_file():
        readme = Path(os.path.relpath(paper.folder / "README.md", results_root)).as_posix()
        links.append(f'<a href="{e(readme)}">README</a>')
    if (Path(results_root) / name).is_dir():
        records = "records" if short else f"records (results/{e(name)}/)"
        links.append(f'<a href="{e(name)}/">{records}</a>')
    links.append(f'<a href="#rows-{e(name)}">{"rows" if short else "all rows"}</a>')
    return links


def _overview(
    groups: dict[str, list[dict[str, Any]]], papers: dict[str, Paper], results_root: Path
) -> list[str]:
    e = html.escape
    out = [
        '<table id="overview">\n<thead><tr><th>paper</th><th>reproduces</th><th>gated metrics</th>'
        "<th>all metric rows</th><th>links</th></tr></thead>\n<tbody>\n"
    ]
    for name, group in groups.items():
        links = " · ".join(_paper_links(name, papers.get(name), results_root, short=True))
        out.append(
            f'<tr data-paper="{e(name)}"><td><a href="#paper-{e(name)}">{e(name)}</a></td>'
            f"<td>{e(group[0]['paper_title'])}</td><td>{_gate_text(group)}</td>"
            f'<td>{len(group)}: {_chips(group)}</td><td class="links">{links}</td></tr>\n'
        )
    out.append("</tbody>\n</table>\n")
    return out


def _misses(rows: list[dict[str, Any]]) -> list[str]:
    e = html.escape
    misses = [row for row in rows if row["verdict"] in (MISS, KNOWN_MISS)]
    out = ['<h2 id="misses">Misses</h2>\n']
    if not misses:
        out.append('<p class="none">No gated number misses its published value.</p>\n')
        return out
    out.append(
        "<p>Gated numbers that disagree with the paper. A known miss stays in the gate with its measured "
        "cause (<code>known_miss</code> in expected.yaml); a plain MISS has no recorded cause yet.</p>\n"
        '<table id="miss-table">\n<thead><tr><th>paper</th><th>experiment</th><th>metric</th><th>tier</th>'
        "<th>published</th><th>reproduced</th><th>verdict</th><th>why</th></tr></thead>\n<tbody>\n"
    )
    for row in misses:
        why = (
            row["note"]
            if row["verdict"] == KNOWN_MISS
            else "no recorded cause" + (f"; {row['note']}" if row["note"] else "")
        )
        aggregate = f' (<a href="{e(row["link"])}">aggregate.json</a>)' if row["link"] else ""
        out.append(
            f'<tr><td><a href="#paper-{e(row["paper"])}">{e(row["paper"])}</a></td>'
            f'<td title="{e(row["title"])}">{e(row["experiment"])}</td><td>{e(row["label"])}</td>'
            f"<td>{e(row['tier'] or '–')}</td><td>{e(published_text(row))}</td>"
            f"<td>{e(row['reproduced'] or '–')}{aggregate}</td>"
            f'<td class="{_verdict_class(row["verdict"])}">{e(row["verdict"])}</td>'
            f'<td class="note">{e(why)}</td></tr>\n'
        )
    out.append("</tbody>\n</table>\n")
    return out


def _tier_counts(group: list[dict[str, Any]]) -> str:
    e = html.escape
    verdicts = _verdicts_in(group)
    counts = Counter((_tier_value(row), row["verdict"]) for row in group)
    head = "".join(f'<th class="{_verdict_class(v)}">{e(v)}</th>' for v in verdicts)
    lines = [f'<table class="tier-counts">\n<thead><tr><th>tier</th>{head}</tr></thead>\n<tbody>\n']
    for tier in _tiers_in(group):
        cells = "".join(
            f'<td class="num">{counts[tier, v]}</td>' if counts[tier, v] else '<td class="zero">0</td>'
            for v in verdicts
        )
        lines.append(f'<tr data-tier="{e(tier)}"><td>{e(TIER_LABELS.get(tier, tier))}</td>{cells}</tr>\n')
    lines.append("</tbody>\n</table>\n")
    return "".join(lines)


def _headline_table(group: list[dict[str, Any]], paper: Paper | None) -> str:
    e = html.escape
    chosen = headline_rows(group, paper)
    if not chosen:
        return '<p class="none">No published number and no result to show.</p>\n'
    if any(row["gated"] for row in chosen):
        intro = "Gated numbers (they decide the verdict), then others with a published value:"
    elif any(row["published"] is not None for row in chosen):
        intro = "Nothing gates; numbers with a published value:"
    else:
        intro = "No published number to compare against (nothing gates); what was measured:"
    lines = [
        f'<p class="sub">{e(intro)}</p>\n<table class="headline">\n<thead><tr>'
        + "".join(f"<th>{e(c)}</th>" for c in HEADLINE_COLUMNS)
        + "</tr></thead>\n<tbody>\n"
    ]
    for row in chosen:
        gated = ' class="gated"' if row["gated"] else ""
        lines.append(
            f'<tr{gated}><td title="{e(row["title"])}">{e(row["experiment"])}</td><td>{e(row["label"])}</td>'
            f"<td>{e(row['tier'] or '–')}</td><td>{e(published_text(row))}</td>"
            f'<td class="reproduced">{e(row["reproduced"] or "–")}</td>'
            f'<td class="{_verdict_class(row["verdict"])}">{e(row["verdict"])}</td></tr>\n'
        )
    lines.append("</tbody>\n</table>\n")
    return "".join(lines)


def _figure(name: str, results_root: Path) -> str:
    e = html.escape
    path = main_figure(name, results_root)
    if path is None:
        return '<figure><p class="none">No figure committed under results/' + e(name) + "/.</p></figure>\n"
    rel = path.relative_to(results_root).as_posix()
    size = png_size(path)
    dims = f' width="{size[0]}" height="{size[1]}"' if size else ""
    return (
        f'<figure><a href="{e(rel)}"><img loading="lazy" src="{e(rel)}" '
        f'alt="{e(name)}: {e(path.name)}"{dims}></a>'
        f"<figcaption>results/{e(rel)}</figcaption></figure>\n"
    )


def _claims_html(judged: list[dict[str, Any]]) -> str:
    """A paper's judged claims under its headline numbers (nothing for a paper without claims)."""
    if not judged:
        return ""
    e = html.escape
    lines = [
        f'<p class="sub">Claims ({e(claims_lib.summary(judged))}): relations between experiments that the '
        'paper states, judged from their aggregates:</p>\n<table class="claims">\n<thead><tr>'
        + "".join(f"<th>{e(c)}</th>" for c in claims_lib.COLUMNS)
        + "</tr></thead>\n<tbody>\n"
    ]
    for claim in judged:
        cells = claims_lib.cells(claim)
        gated = ' class="gated"' if claim["gated"] else ""
        lines.append(
            f"<tr{gated}>"
            + "".join(
                f'<td class="{_verdict_class(cells[c])}">{e(cells[c])}</td>'
                if c == "verdict"
                else f'<td class="note">{e(cells[c])}</td>'
                if c == "note"
                else f"<td>{e(cells[c])}</td>"
                for c in claims_lib.COLUMNS
            )
            + "</tr>\n"
        )
    lines.append("</tbody>\n</table>\n")
    return "".join(lines)


def _card(
    name: str,
    group: list[dict[str, Any]],
    paper: Paper | None,
    results_root: Path,
    judged: list[dict[str, Any]] | None = None,
) -> str:
    e = html.escape
    title = group[0]["paper_title"]
    byline = ""
    if paper is not None:
        authors = list(paper.meta.get("authors") or [])
        who = authors[0] + (
            " et al." if len(authors) > 2 else f" & {authors[1]}" if len(authors) == 2 else ""
        )
        byline = f"{who} ({paper.meta.get('year', '')})" if authors else str(paper.meta.get("year", ""))
    links = " ".join(_paper_links(name, paper, results_root))
    return (
        f'<div class="card" id="paper-{e(name)}" data-paper="{e(name)}">\n<div>\n'
        f"<h3>{e(name)}" + (f" — {e(title)}" if title else "") + "</h3>\n"
        f'<div class="sub">{e(byline)}' + (" · " if byline else "") + f"{e(summary(group))}</div>\n"
        f'<div class="links">{links}</div>\n'
        f"{_tier_counts(group)}{_headline_table(group, paper)}{_claims_html(judged or [])}</div>\n"
        f"{_figure(name, results_root)}</div>\n"
    )


def _filters(rows: list[dict[str, Any]]) -> str:
    e = html.escape
    counts = Counter(row["verdict"] for row in rows)
    boxes = "".join(
        f'<label><input type="checkbox" name="verdict" value="{e(v)}" checked> '
        f'<span class="chip {_verdict_class(v)}">{e(v)}</span> {counts[v]}</label>'
        for v in _verdicts_in(rows)
    )
    tier_counts = Counter(_tier_value(row) for row in rows)
    options = '<option value="">all tiers</option>' + "".join(
        f'<option value="{e(t)}">{e(TIER_LABELS.get(t, t))} ({tier_counts[t]})</option>'
        for t in _tiers_in(rows)
    )
    return (
        f'<div id="filters">\n<div>Verdict: {boxes}</div>\n<div><label>Tier: <select id="tier">{options}'
        '</select></label> <input id="filter" type="search" placeholder="Filter rows by text…"> '
        '<button type="button" id="all-verdicts">show all</button> '
        f'<strong><span id="shown-count">{len(rows)}</span></strong> of '
        f'<span id="total-count">{len(rows)}</span> rows shown</div>\n</div>\n'
    )


def _row_section(name: str, group: list[dict[str, Any]]) -> str:
    e = html.escape
    title = group[0]["paper_title"]
    out = [
        f'<section class="rows" id="rows-{e(name)}" data-paper="{e(name)}">\n'
        f'<h3><a href="#paper-{e(name)}">{e(name)}</a>' + (f" — {e(title)}" if title else "") + " "
        f'<span class="count">({len(group)} of {len(group)} rows shown)</span></h3>\n'
        '<table class="board">\n<thead><tr>' + "".join(f"<th>{e(c)}</th>" for c in ROW_COLUMNS),
        "</tr></thead>\n<tbody>\n",
    ]
    for row in page_order(group):
        link = f'<a href="{e(row["link"])}">aggregate.json</a>' if row["link"] else "–"
        wall = "" if row["wall_time_s"] is None else f"{float(row['wall_time_s']):.3f}"
        cells = [
            f'<td title="{e(row["title"])}">{e(row["experiment"])}</td>',
            f"<td>{e(row['label'])}</td>",
            f"<td>{e(published_text(row))}</td>",
            f'<td class="reproduced">{e(row["reproduced"] or "–")}</td>',
            f'<td class="{_verdict_class(row["verdict"])}">{e(row["verdict"])}</td>',
            f"<td>{'gated' if row['gated'] else ''}</td>",
            f"<td>{e(row['tier'] or '–')}</td>",
            f"<td>{e(row['hardware'] or '–')}</td>",
            f'<td data-sort="{wall}">{e(human_time(row["wall_time_s"]))}</td>',
            f"<td>{link}</td>",
            f'<td class="note">{e(row["note"])}</td>',
        ]
        attrs = f'data-verdict="{e(row["verdict"])}" data-tier="{e(_tier_value(row))}"'
        gated = ' class="gated"' if row["gated"] else ""
        out.append(f"<tr{gated} {attrs}>" + "".join(cells) + "</tr>\n")
    out.append("</tbody>\n</table>\n</section>\n")
    return "".join(out)


def write_html(
    rows: list[dict[str, Any]],
    path: Path,
    papers: dict[str, Paper] | None = None,
    results_root: Path | None = None,
    judged: list[dict[str, Any]] | None = None,
) -> Path:
    """The page; ``results_root`` (default: the page's folder) is where figures and records are looked up,
    ``judged`` the papers' claims (``collect_claims``), shown on each paper's card."""
    judged = judged or []
    e = html.escape
    path = Path(path)
    results_root = Path(results_root) if results_root is not None else path.parent
    papers = papers or {}
    groups = _by_paper(rows)
    toc = " ".join(f'<a href="#paper-{e(name)}">{e(name)}</a>' for name in groups)
    out = [
        HTML_HEAD,
        "<h1>Leaderboard: published vs reproduced</h1>\n",
        f'<p id="summary"><strong>Summary:</strong> {e(_with_claims(summary(rows), judged))}.</p>\n',
        f'<p class="explain">{_code(e(EXPLANATION))} This page and the LEADERBOARD.md next to it are '
        "generated from results/ by <code>make leaderboard</code>; do not edit.</p>\n",
        f'<nav class="toc">Papers: {toc} <a href="#misses">misses</a> <a href="#rows">all rows</a></nav>\n',
        *_overview(groups, papers, results_root),
        *_misses(rows),
        '<h2 id="papers">Papers</h2>\n',
    ]
    out += [
        _card(name, group, papers.get(name), results_root, [c for c in judged if c["paper"] == name])
        for name, group in groups.items()
    ]
    out += ['<h2 id="rows">All rows</h2>\n', _filters(rows)]
    out += [_row_section(name, group) for name, group in groups.items()]
    out += [HTML_SCRIPT, "</body>\n</html>\n"]
    atomic_write_text(path, "".join(out))
    return path


# -----------------------------------------------------------------------------
# W&B and the entry point


def log_wandb(rows: list[dict[str, Any]]) -> None:
    import wandb  # lazy: importing wandb is slow and only this function needs it

    run = wandb.init(
        project=os.environ.get("WANDB_PROJECT", "repro"),
        job_type="leaderboard",
        mode=wandb_mode(),
    )
    data = [[row[c] for c in COLUMNS] for row in rows]
    run.log({"leaderboard": wandb.Table(columns=list(COLUMNS), data=data)})
    run.summary.update({f"count/{v}": sum(row["verdict"] == v for row in rows) for v in VERDICTS})
    run.finish()


README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"
DEVIATIONS_START, DEVIATIONS_END = "<!-- deviations:start -->", "<!-- deviations:end -->"


def replace_between_markers(path: Path, body: str, start: str = README_START, end: str = README_END) -> bool:
    """Put ``body`` between the markers ``start`` and ``end`` of ``path`` (the results markers by default);
    False when the file or a marker is absent. The file is written only when its text changes."""
    if not path.exists():
        return False
    text = path.read_text()
    if start not in text or end not in text:
        return False
    head, rest = text.split(start, 1)
    tail = rest.split(end, 1)[1]
    new = f"{head}{start}\n{body}\n{end}{tail}"
    if new != text:
        atomic_write_text(path, new)
    return True


DEVIATION_COLUMNS = ("id", "what", "against", "tiers", "experiments", "why", "effect")


def deviations_table(paper: Paper) -> list[str]:
    """The paper's deviations ledger (``deviations:`` of expected.yaml) as a Markdown section body."""
    ledger = paper.deviations
    lines = [
        "",
        f"Generated from `deviations:` in `expected.yaml` by `make leaderboard`: {len(ledger)} "
        f"entr{'y' if len(ledger) == 1 else 'ies'}. *against*: whether it departs from the paper, the "
        "official code, or both; the leaderboard's notes name the ids that touch each row.",
        "",
        "| " + " | ".join(DEVIATION_COLUMNS) + " |",
        "|" + "---|" * len(DEVIATION_COLUMNS),
    ]
    for d in ledger:
        what = d.what
        if d.config:
            what += (
                ("" if what.endswith(".") else ".")
                + " Config: "
                + ", ".join(f"`{k}` = {_config_value(v)}" for k, v in d.config)
                + "."
            )
        cells = [
            f"`{d.id}`",
            what,
            d.against,
            ", ".join(d.tiers),
            _experiments_text(d, list(paper.experiments)),
            d.why,
            d.effect,
        ]
        lines.append("| " + " | ".join(_md(c) for c in cells) + " |")
    return [*lines, ""]


def _experiments_text(deviation, experiments: list[str]) -> str:
    """``all``, ``all but a, b`` where that is shorter, or the names."""
    if deviation.all_experiments:
        return "all"
    left_out = [e for e in experiments if e not in deviation.experiments]
    if len(left_out) <= 3 and len(left_out) < len(deviation.experiments):
        return "all but " + ", ".join(left_out)
    return ", ".join(deviation.experiments)


def _config_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def sync_readmes(
    rows: list[dict[str, Any]],
    papers: dict[str, Paper],
    results_root: Path,
    judged: list[dict[str, Any]] | None = None,
) -> None:
    """Rewrite the generated tables of README.md (one line per paper) and of each paper's README (every
    row, its claims, its deviations), so that no README can drift from results/ or expected.yaml."""
    judged = collect_claims(results_root, papers) if judged is None else judged
    groups = _by_paper(rows)
    for name, group in groups.items():
        if name not in papers:
            continue
        readme = papers[name].folder / "README.md"
        prefix = os.path.relpath(results_root, readme.parent) + "/"
        intro = f"Generated from `results/` by `make leaderboard`. {summary(group)}."
        replace_between_markers(readme, "\n".join(["", intro, "", *markdown_table(group, prefix), ""]))
    lines = ["", "| paper | reproduces | verdicts (all tiers) |", "|---|---|---|"]
    for name, group in groups.items():
        title = group[0]["paper_title"]
        link = f"[{_md(name)}](papers/{name}/README.md)" if name in papers else _md(name)
        own = [c for c in judged if c["paper"] == name]
        lines.append(f"| {link} | {_md(title)} | {_md(_with_claims(summary(group), own))} |")
    replace_between_markers(results_root.parent / "README.md", "\n".join([*lines, ""]))
    replace_between_markers(
        results_root.parent / "README.md",
        "\n".join(run_time_table(papers, results_root)),
        PLAN_START,
        PLAN_END,
    )
    sync_deviations(papers)
    sync_claims(papers, judged)


PLAN_START, PLAN_END = "<!-- plan:start -->", "<!-- plan:end -->"
DEFAULT_SEEDS, CORES = 3, 2  # what `make reproduce PAPER=P` runs, on the 2-core machine the records come from


def run_time_table(papers: dict[str, Paper], results_root: Path) -> list[str]:
    """Per paper, what `make reproduce PAPER=P` trains and how long that took here: the committed records'
    mean wall time per seed, 3 seeds of each experiment, two seeds at a time on 2 cores; and the same for the
    full tier where full records are committed. Records measured under load make these upper bounds."""
    lines = ["", "| paper | trains by default | cpu tier, 2 cores | full tier |", "|---|---|---|---|"]
    for name, paper in papers.items():
        default = paper.default_experiments()
        cells = []
        for tier in ("cpu", "full"):
            chosen = [e.name for e in default if paper.config_path(e.name, tier).exists()]
            seconds = mean_wall_seconds(paper, tier, results_root)
            known = [seconds[e] for e in chosen if e in seconds]
            estimate = human_time(sum(known) * DEFAULT_SEEDS / CORES)
            if tier == "cpu":
                cell = f"{len(chosen)} experiments x {DEFAULT_SEEDS} seeds: " + (
                    estimate if known else "no record"
                )
                missing = len(chosen) - len(known)
                cells.append(cell + (f" ({missing} without a record)" if missing else ""))
            else:
                recorded = [e for e in chosen if e in seconds]
                cell = f"{len(chosen)} configured, {len(recorded)} with records"
                cells.append(cell + (f": {estimate} for those" if known else ""))
        kind = "headline experiments" if paper.headline else "every experiment"
        link = f"[{_md(name)}](papers/{name}/README.md)"
        lines.append(f"| {link} | {kind} | {_md(cells[0])} | {_md(cells[1])} |")
    return [*lines, ""]


def sync_deviations(papers: dict[str, Paper]) -> None:
    """Rewrite each paper README's deviations table (between the deviations markers) from its ledger."""
    for paper in papers.values():
        body = "\n".join(deviations_table(paper))
        replace_between_markers(paper.folder / "README.md", body, DEVIATIONS_START, DEVIATIONS_END)


CLAIMS_START, CLAIMS_END = "<!-- claims:start -->", "<!-- claims:end -->"


def claims_section(judged: list[dict[str, Any]]) -> list[str]:
    """A paper's judged claims as its README's claims section body (between the claims markers)."""
    return [
        "",
        f"Generated from `claims:` in `expected.yaml` and the committed aggregates by `make leaderboard`: "
        f"{claims_lib.summary(judged)}. {CLAIMS_EXPLANATION}",
        "",
        *claims_table(judged),
        "",
    ]


def sync_claims(papers: dict[str, Paper], judged: list[dict[str, Any]]) -> None:
    """Rewrite each paper README's claims table (between the claims markers) from its judged claims."""
    for name, paper in papers.items():
        body = "\n".join(claims_section([c for c in judged if c["paper"] == name]))
        replace_between_markers(paper.folder / "README.md", body, CLAIMS_START, CLAIMS_END)


def build(
    results_root: Path = RESULTS,
    wandb: bool = False,
    papers: dict[str, Paper] | None = None,
) -> tuple[Path, Path]:
    """Collect the rows and write LEADERBOARD.md and leaderboard.html into ``results_root``."""
    results_root = Path(results_root)
    papers = discover() if papers is None else papers
    rows = collect(results_root, papers)
    judged = collect_claims(results_root, papers)
    md = write_markdown(rows, results_root / "LEADERBOARD.md", judged)
    page = write_html(rows, results_root / "leaderboard.html", papers, results_root, judged)
    # READMEs describe the committed results only: a results folder elsewhere (a test's) leaves them alone.
    if results_root.resolve() == RESULTS_IN_REPO.resolve():
        sync_readmes(rows, papers, results_root, judged)
    if wandb:
        log_wandb(rows)
    return md, page
