"""The leaderboard: every published number next to what this suite reproduced, in one place.

:func:`collect` reads the committed ``results/<paper>/<experiment>/<tier>/aggregate.json`` files and adds
a row for every experiment of a discovered paper that has no aggregate yet (not implemented, data absent, or
simply not run), so a missing result is visible instead of silently absent. :func:`build` writes two views
of the same rows: ``results/LEADERBOARD.md`` (reviewed in git diffs, so its output is deterministic) and
``results/leaderboard.html`` (one static page, filterable and sortable); :func:`log_wandb` sends them to W&B.
"""

from __future__ import annotations

import html
import os
from collections import Counter
from pathlib import Path
from typing import Any

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
        changes = agg.get("expected_changes") or []
        for metric in agg.get("metrics", []):
            note = notes.get(metric["key"], "")
            if experiment is None:
                note = "no longer in expected.yaml; the aggregate is kept as it was committed"
            known = metric.get("known_miss")
            if known and metric.get("verdict") == KNOWN_MISS:
                note = f"known miss (since {known['since']}): {known['why']}" + (f"; {note}" if note else "")
            tier = agg.get("tier") or path.parts[-2]
            ids = [d.id for d in paper.deviations if d.affects(exp_name, tier)] if paper else []
            if ids:
                # The ledger's entries that touch this experiment at this tier (README: Deviations).
                note = f"{note}; deviations: {', '.join(ids)}" if note else f"deviations: {', '.join(ids)}"
            if changes:
                # The entry this number is judged against was edited after the result: say when.
                changed = f"expected.yaml entry changed after this result, last on {changes[-1]['at'][:10]}"
                note = f"{note}; {changed}" if note else changed
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


def write_markdown(rows: list[dict[str, Any]], path: Path) -> Path:
    lines = [
        "# Leaderboard",
        "",
        f"**Summary:** {summary(rows)}.",
        "",
        EXPLANATION,
        "",
        "Links point to the aggregate JSON under results/. Generated by `repro.leaderboard`; do not edit.",
    ]
    for paper, group in _by_paper(rows).items():
        title = group[0]["paper_title"]
        lines += ["", f"## {_md(paper)}" + (f" — {_md(title)}" if title else ""), ""]
        lines += markdown_table(group)
    atomic_write_text(Path(path), "\n".join(lines) + "\n")
    return Path(path)


# -----------------------------------------------------------------------------
# HTML

VERDICT_CLASS = {
    PASS: "pass",
    MISS: "miss",
    KNOWN_MISS: "miss",
    SHOWN: "shown",
}  # NOT RUN, NOT IMPLEMENTED, NO RESULT: amber
HTML_HEAD = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Leaderboard</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; font-size: 14px; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f0f0f0; cursor: pointer; user-select: none; }
td.pass { background: #c8f0c8; }
td.miss { background: #f5c2c2; }
td.shown { background: #e4e4e4; }
td.amber { background: #fde3a7; }
input { font-size: 14px; padding: 4px; width: 30em; margin-bottom: 1em; }
</style>
</head>
<body>
"""
# Filter: hide rows whose text lacks the query. Sort: by the clicked column, numbers as numbers (data-sort
# holds a sortable value where the shown text is not, e.g. wall time); a second click reverses the order.
HTML_SCRIPT = """<script>
const rows = () => Array.from(document.querySelectorAll("#board tbody tr"));
document.getElementById("filter").addEventListener("input", e => {
  const q = e.target.value.toLowerCase();
  rows().forEach(r => { r.style.display = r.textContent.toLowerCase().includes(q) ? "" : "none"; });
});
document.querySelectorAll("#board th").forEach((th, i) => th.addEventListener("click", () => {
  const dir = th.dataset.dir === "asc" ? -1 : 1;
  th.dataset.dir = dir === 1 ? "asc" : "desc";
  const val = r => r.children[i].dataset.sort ?? r.children[i].textContent;
  const sorted = rows().sort((a, b) => dir * val(a).localeCompare(val(b), undefined, {numeric: true}));
  sorted.forEach(r => r.parentNode.appendChild(r));
}));
</script>
"""
HTML_COLUMNS = ("paper", *MD_COLUMNS)  # one page for all papers: the paper is a column


def write_html(rows: list[dict[str, Any]], path: Path) -> Path:
    e = html.escape
    out = [HTML_HEAD, "<h1>Leaderboard</h1>\n", f"<p><strong>Summary:</strong> {e(summary(rows))}.</p>\n"]
    out.append(f"<p>{e(EXPLANATION)}</p>\n")
    out.append('<input id="filter" type="search" placeholder="Filter rows…">\n')
    out.append('<table id="board">\n<thead><tr>' + "".join(f"<th>{e(c)}</th>" for c in HTML_COLUMNS))
    out.append("</tr></thead>\n<tbody>\n")
    for row in rows:
        link = f'<a href="{e(row["link"])}">aggregate.json</a>' if row["link"] else "–"
        wall = "" if row["wall_time_s"] is None else f"{float(row['wall_time_s']):.3f}"
        cells = [
            f'<td title="{e(row["paper_title"])}">{e(row["paper"])}</td>',
            f'<td title="{e(row["title"])}">{e(row["experiment"])}</td>',
            f"<td>{e(row['label'])}</td>",
            f"<td>{e(published_text(row))}</td>",
            f"<td>{e(row['reproduced'] or '–')}</td>",
            f'<td class="{VERDICT_CLASS.get(row["verdict"], "amber")}">{e(row["verdict"])}</td>',
            f"<td>{e(row['tier'] or '–')}</td>",
            f"<td>{e(row['hardware'] or '–')}</td>",
            f'<td data-sort="{wall}">{e(human_time(row["wall_time_s"]))}</td>',
            f"<td>{link}</td>",
            f"<td>{e(row['note'])}</td>",
        ]
        out.append("<tr>" + "".join(cells) + "</tr>\n")
    out += ["</tbody>\n</table>\n", HTML_SCRIPT, "</body>\n</html>\n"]
    atomic_write_text(Path(path), "".join(out))
    return Path(path)


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


def sync_readmes(rows: list[dict[str, Any]], papers: dict[str, Paper], results_root: Path) -> None:
    """Rewrite the generated tables of README.md (one line per paper) and of each paper's README (every
    row), so that no README can drift from results/."""
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
        lines.append(f"| {link} | {_md(title)} | {_md(summary(group))} |")
    replace_between_markers(results_root.parent / "README.md", "\n".join([*lines, ""]))
    replace_between_markers(
        results_root.parent / "README.md",
        "\n".join(run_time_table(papers, results_root)),
        PLAN_START,
        PLAN_END,
    )
    sync_deviations(papers)


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


def build(
    results_root: Path = RESULTS,
    wandb: bool = False,
    papers: dict[str, Paper] | None = None,
) -> tuple[Path, Path]:
    """Collect the rows and write LEADERBOARD.md and leaderboard.html into ``results_root``."""
    results_root = Path(results_root)
    rows = collect(results_root, papers)
    md = write_markdown(rows, results_root / "LEADERBOARD.md")
    page = write_html(rows, results_root / "leaderboard.html")
    # READMEs describe the committed results only: a results folder elsewhere (a test's) leaves them alone.
    if results_root.resolve() == RESULTS_IN_REPO.resolve():
        sync_readmes(rows, papers or discover(), results_root)
    if wandb:
        log_wandb(rows)
    return md, page
