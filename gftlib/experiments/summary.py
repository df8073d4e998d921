"""Build ``results/summary.md`` from every ``results/*.json`` (run by ``make figures``).

It collects the claim rows (:func:`gftlib.experiments.claims.compare_claim`) of every experiment
notebook, applies Holm's correction across *all* of them (one family for the whole summary), and
writes one row per (claim, scenario, GFT form, baseline) with the difference GFT - baseline, its
95 % CI, the effect size, the corrected p-value and the verdict; then a short headline table and
every notebook's checks. With ``--readme README.md`` it also rewrites the headline table between
the README's ``<!-- summary:headline:start -->`` / ``<!-- summary:headline:end -->`` markers, and
the table of figures (each linked to its notebook cell and plotting function, from the results'
provenance) between ``<!-- summary:figures:start -->`` / ``<!-- summary:figures:end -->`` if present.

Rows flagged ``machine_dependent`` (wall-time metrics, E1's training speed in seconds) are tested
and Holm-corrected like every other row; the table marks them, and a note says that their values,
and through the shared Holm family the corrected p-values of the other rows, can change when the
runs are recomputed on another machine or under another load.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gftlib.experiments.claims import apply_holm, compare_claim, fmt_p
from gftlib.experiments.provenance import figure_table
from gftlib.io import atomic_write_text, check_output_path

__all__ = ["collect_rows", "build_summary", "headline_table", "attribution_text", "update_readme", "main",
           "README_START", "README_END", "FIGURES_START", "FIGURES_END", "ALPHA", "MACHINE_NOTE"]

ALPHA = 0.05
README_START = "<!-- summary:headline:start -->"
README_END = "<!-- summary:headline:end -->"
FIGURES_START = "<!-- summary:figures:start -->"
FIGURES_END = "<!-- summary:figures:end -->"


def _legacy(c: dict[str, Any]) -> dict[str, Any]:
    """A row of the older ``verdict.claim_entry`` format (GFT vs ``ft``), retested with Welch."""
    return compare_claim(c["claim"], c["metric"], c["better"], c["gft"]["values"], c["ft"]["values"],
                         gft_method=c.get("gft_method", "gft"), baseline_method=c.get("ft_method", "ft"),
                         scenario="default", figure=c.get("figure", ""), paired=False)


def collect_rows(results_dir: Path) -> list[dict[str, Any]]:
    """Every claim row of ``results_dir/*.json`` with ``notebook``, ``profile`` and ``device`` added."""
    rows = []
    for path in sorted(Path(results_dir).glob("*.json")):
        doc = json.loads(path.read_text())
        env, params = doc.get("environment", {}), doc.get("parameters", {})
        for c in doc.get("claims") or doc.get("numbers", {}).get("claims", []):
            row = dict(c) if "p_raw" in c else _legacy(c)
            row.update(notebook=path.stem, profile=params.get("profile", "?"),
                       device=env.get("device_name", "?"))
            rows.append(row)
    return rows


def _ms(stat: dict[str, Any]) -> str:
    return f"{stat['mean']:.4g} ± {stat['std']:.2g}"


def _diff(r: dict[str, Any]) -> str:
    ci = r.get("ci")
    text = f"{r['diff']:+.3g}"
    return text + (f" [{ci[0]:+.3g}, {ci[1]:+.3g}]" if ci else " [-]")


def _effect(r: dict[str, Any]) -> str:
    e = r.get("effect_size")  # "inf" / "-inf" (JSON strings) when every unit gives the same difference
    if e is None:
        return "-"
    return f"{float(e):+.2f} ({r['effect_size_kind']})"


def _p_holm(r: dict[str, Any]) -> str:
    text = fmt_p(r.get("p_holm"))
    if r.get("kind") == "equivalence":
        text += f" / worse: {fmt_p(r.get('p_worse_holm'))}"
    return text


def _row_line(r: dict[str, Any]) -> str:
    fig = r.get("figure", "")
    fig_link = f"[{fig}](../figures/{fig}.png)" if fig else ""
    metric = f"{r['metric']} ({r['better']} better)"
    if r.get("kind") == "equivalence":
        metric += f"; equivalent within ±{r['margin']:.3g}"
    if r.get("machine_dependent"):
        metric += "; wall time, machine-dependent"
    return (f"| {r['claim']} | {r['scenario']} | {metric} | {r['gft_method']} | {r['baseline_method']} | "
            f"{_ms(r['gft'])} | {_ms(r['baseline'])} | {_diff(r)} | {_effect(r)} | "
            f"{r['test']}, n={r['n_a']}/{r['n_b']} | {fmt_p(r.get('p_raw'))} | {_p_holm(r)} | "
            f"**{r['verdict']}** | {fig_link} | {r['notebook']} ({r['profile']}) |")


def _cell(rs: list[dict[str, Any]]) -> str:
    """Verdicts of one (claim, baseline) for the headline: the pooled rows if any, the only scenario's
    rows if there is one, else counts reproduced / not reproduced / inconclusive over scenarios."""
    pooled = [r for r in rs if r["scenario"] == "pooled"]
    scen = {r["scenario"] for r in rs}
    pick = pooled or (rs if len(scen) == 1 else [])
    if pick:
        return "; ".join(f"{r['gft_method'].removeprefix('gft-')}: {r['verdict']}" for r in pick)
    n = Counter(r["verdict"] for r in rs)
    return f"{n['reproduced']} / {n['not reproduced']} / {n['inconclusive']} (r / n / i)"


def headline_table(rows: Sequence[dict[str, Any]]) -> str:
    """One line per (notebook, claim), one column per baseline: the verdicts of the pooled rows (or of
    the single scenario) per GFT form."""
    baselines = list(dict.fromkeys(r["baseline_method"] for r in rows))
    groups: dict[tuple[str, str], dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        groups[(r["notebook"], r["claim"])][r["baseline_method"]].append(r)
    lines = ["| notebook | claim | " + " | ".join(f"vs `{b}`" for b in baselines) + " |",
             "|---|---|" + "---|" * len(baselines)]
    for (nb, claim), by_base in groups.items():
        cells = [_cell(by_base[b]) if b in by_base else "-" for b in baselines]
        lines.append(f"| {nb} | {claim} | " + " | ".join(cells) + " |")
    if not groups:
        lines = ["| notebook | claim | verdicts |", "|---|---|---|", "| (no experiment results yet) | | |"]
    return "\n".join(lines)


def attribution_text(rows: Sequence[dict[str, Any]], baseline: str = "ft-ot") -> str:
    """A generated sentence per verdict: which claims GFT's pretrained term wins, loses or leaves open
    against ``baseline`` (the pooled rows where a notebook has them, else its single scenario)."""
    picked = [r for r in rows if r["baseline_method"] == baseline]
    pooled_nb = {r["notebook"] for r in picked if r["scenario"] == "pooled"}
    picked = [r for r in picked if r["scenario"] == "pooled" or r["notebook"] not in pooled_nb]
    if not picked:
        return f"No claim row against `{baseline}` yet."
    by: dict[str, list[str]] = defaultdict(list)
    for r in picked:
        by[r["verdict"]].append(f"{r['claim']} ({r['gft_method'].removeprefix('gft-')}, {r['notebook']}, "
                                f"diff {r['diff']:+.3g})")
    parts = [f"*{v}*: " + "; ".join(by[v]) for v in ("reproduced", "not reproduced", "inconclusive") if by[v]]
    return (f"What GFT adds beyond the OT coupling, as measured (rows against `{baseline}`, Holm-corrected): "
            + ". ".join(parts) + ".")


RULE = (
    "Verdict rule (fixed in advance, `gftlib.eval.statistics`): per row the difference GFT - baseline over "
    "seeds, tested by a paired t-test when the runs share seeds (same target sample, pretrained model "
    "and training randomness for every method) or Welch's t-test otherwise; *difference* claims test "
    "H0: no difference (two-sided), *equivalence* claims (\"comparable quality\") test H0: |difference| "
    ">= margin (TOST; the margin is fixed in advance and shown in the row: the metric's evaluation noise "
    "in E1, a tenth of the source-to-target distance in E2) and, separately, H0: GFT worse by at most "
    "the margin. All hypotheses of all rows form one family, Holm-corrected at alpha = {alpha}. "
    "*reproduced*: GFT significantly better (or equivalent); *not reproduced*: the baseline "
    "significantly better (or GFT worse by more than the margin); *inconclusive* otherwise, and always "
    "with a single seed. CI: 95 % t-interval of the difference (not corrected)."
)


MACHINE_NOTE = (
    "Wall-time rows ({n}, marked *wall time, machine-dependent*): seconds of training on the "
    "machine that computed the runs, under its load at the time (`make figures` runs two notebooks at "
    "once); a cached run keeps the time of its first computation. They are in the Holm family like every "
    "row, so recomputing them elsewhere can also move the corrected p-values of the other rows."
)


def build_summary(results_dir: Path, *, alpha: float = ALPHA) -> str:
    docs = {p.stem: json.loads(p.read_text()) for p in sorted(Path(results_dir).glob("*.json"))}
    rows = apply_holm(collect_rows(results_dir), alpha=alpha)
    n_hyp = rows[0]["family_size"] if rows else 0
    n_machine = sum(bool(r.get("machine_dependent")) for r in rows)
    lines = ["# Results summary", "", "Generated by `make figures` from `results/*.json`; do not edit by hand.",
             "", RULE.format(alpha=alpha), "",
             f"{len(rows)} claim rows, {n_hyp} tested hypotheses in the Holm family.", "",
             *([MACHINE_NOTE.format(n=n_machine), ""] if n_machine else []),
             "## Headline", "", headline_table(rows), "", attribution_text(rows), "", "## Claim rows", "",
             "| claim | scenario | metric | GFT form | baseline | GFT | baseline | diff [95 % CI] | "
             "effect size | test | p (raw) | p (Holm) | verdict | figure | notebook |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += [_row_line(r) for r in rows] or ["| (no experiment results yet) |" + " |" * 14]
    lines += ["", "## Theorem and experiment checks", "",
              "| notebook | checks passed | failed checks |", "|---|---|---|"]
    for stem, doc in docs.items():
        checks = doc.get("checks", [])
        failed = [c["name"] for c in checks if not c.get("passed")]
        lines.append(f"| {stem} | {len(checks) - len(failed)}/{len(checks)} | {', '.join(failed) or '-'} |")
    lines += ["", "## Where each figure comes from", "", figure_table(docs)]
    return "\n".join(lines) + "\n"


def update_readme(readme_text: str, headline: str, *, start_marker: str = README_START,
                  end_marker: str = README_END) -> str:
    """Replace the text between the README markers by ``headline`` (markers must both be present)."""
    start, end = readme_text.find(start_marker), readme_text.find(end_marker)
    if start < 0 or end < start:
        raise ValueError(f"README must contain {start_marker!r} followed by {end_marker!r}")
    head = readme_text[: start + len(start_marker)]
    return f"{head}\n{headline}\n{readme_text[end:]}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results")
    parser.add_argument("--out", default="results/summary.md")
    parser.add_argument("--readme", default=None, help="README whose headline block to rewrite")
    args = parser.parse_args(argv)
    if not Path(args.results).is_dir():  # checked before anything is written
        parser.error(f"--results must be an existing folder of results JSON files, got {args.results!r}")
    try:
        check_output_path("--out", args.out, directory=False)
    except ValueError as err:
        parser.error(str(err))
    if args.readme is not None and not Path(args.readme).is_file():
        parser.error(f"--readme must be an existing README file, got {args.readme!r}")
    atomic_write_text(args.out, build_summary(Path(args.results)))
    print(f"[summary] wrote {args.out}")
    if args.readme:
        rows = apply_holm(collect_rows(Path(args.results)), alpha=ALPHA)
        path = Path(args.readme)
        block = headline_table(rows) + "\n\n" + attribution_text(rows)
        text = update_readme(path.read_text(), block)
        if FIGURES_START in text:
            docs = {p.stem: json.loads(p.read_text()) for p in sorted(Path(args.results).glob("*.json"))}
            text = update_readme(text, figure_table(docs), start_marker=FIGURES_START, end_marker=FIGURES_END)
        atomic_write_text(path, text)
        print(f"[summary] rewrote the headline table (and the figure table) in {args.readme}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
