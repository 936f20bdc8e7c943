#!/usr/bin/env python3
"""Pool rounds of scripts/bundle_candidates.py: each candidate over every seed it ran, the others
paired by seed against one of them, and how far each choosing rule went with the unseen patients.

One round is a few seeds; a recipe's verdict needs more, run as several rounds (one machine's time
is short). This reads their summary.json files (nothing is trained) and writes, in --out:
pooled.json (every figure), pooled.md (the tables, to paste) and rounds.png (a point per run: the
rule's figure on the old patients against the unseen patients' Dice, one colour per candidate;
skipped with a line where matplotlib is missing).

    python3 scripts/bundle_rounds.py runs/r4-19,20 runs/r4-21,22 --base v3-500-e2 --out pooled

A candidate and seed seen in two rounds counts once (the later folder given wins, and it is said).
The rule figures are computed from the per-patient Dice each run keeps, so rounds written before a
rule existed pool under it too.
"""

from __future__ import annotations

import argparse
import json
import statistics as st
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # the candidate script, and echoseg without an install
import bundle_candidates as bc  # noqa: E402

from echoseg.atomic import atomic_path, write_json, write_text  # noqa: E402

GROUPS = ("old", "unseen", "nine")


def load(dirs: list[Path]) -> tuple[list[dict], list[str]]:
    """Every run of every round, each with its round's folder (``round``); and what was skipped."""
    runs: dict[tuple, dict] = {}
    notes = []
    for d in dirs:
        path = d / "summary.json"
        if not d.is_dir():
            notes.append(f"{d}: {'not a folder' if d.exists() else 'no such folder'}; skipped")
            continue
        try:
            found = json.loads(path.read_text())["runs"]
        except FileNotFoundError:
            notes.append(f"{d}: no summary.json (a round writes it as its first training ends); skipped")
            continue
        except (ValueError, KeyError, TypeError) as e:
            notes.append(f"{path}: not a bundle_candidates summary ({e}); skipped")
            continue
        for r in found:
            key = (r["candidate"], r["seed"])
            if key in runs:
                notes.append(f"{r['candidate']} seed {r['seed']}: in {runs[key]['round']} and {d}; {d} kept")
            runs[key] = dict(r, round=str(d))
    return sorted(runs.values(), key=lambda r: (r["candidate"], r["seed"])), notes


def _patients(run: dict, group: str) -> list[float]:
    old = set(bc.OLD)
    return [p["dice"] for p in run["patients"].values()
            if group == "nine" or (p["split"] in old) == (group == "old")]


def figure(run: dict, rule: str) -> float | None:
    """The rule's figure for one run, on the old patients (as bundle_candidates.score gives it)."""
    if rule == "old-trimmed":
        return bc.trimmed_mean(_patients(run, "old"))
    return run["groups"].get("old", {}).get(bc.RULES[rule][0])


def group_dice(run: dict, group: str) -> float | None:
    """Frame-pooled Dice of old or unseen as scored; for all nine, the mean of patients."""
    if group == "nine":
        return bc._mean(_patients(run, "nine"))
    return run["groups"].get(group, {}).get("dice")


def per_candidate(runs: list[dict], rule: str) -> dict:
    out: dict[str, dict] = {}
    for name in sorted({r["candidate"] for r in runs}):
        rs = [r for r in runs if r["candidate"] == name]
        row: dict = {"seeds": [r["seed"] for r in rs], "rule_figure": _avg([figure(r, rule) for r in rs])}
        for group in GROUPS:
            ds = [d for d in (group_dice(r, group) for r in rs) if d is not None]
            worst = [min(p) for p in (_patients(r, group) for r in rs) if p]
            if ds:
                row[group] = {"dice": _avg(ds), "sd": round(st.pstdev(ds), 4), "worst_patient": _avg(worst),
                              "lowest_worst_patient": min(worst)}
        pids = sorted({p for r in rs for p in r["patients"]})
        row["per_patient"] = {p: _avg([r["patients"][p]["dice"] for r in rs if p in r["patients"]]) for p in pids}
        out[name] = row
    return out


def paired(runs: list[dict], base: str) -> dict:
    """Each other candidate minus ``base`` at the seeds both ran: mean, its standard error, ahead in."""
    by = {(r["candidate"], r["seed"]): r for r in runs}
    out = {}
    for name in sorted({r["candidate"] for r in runs} - {base}):
        seeds = sorted(s for c, s in by if c == name and (base, s) in by)
        if not seeds:
            continue
        row: dict = {"seeds": seeds}
        for group in GROUPS:
            diffs = [a - b for a, b in ((group_dice(by[(name, s)], group), group_dice(by[(base, s)], group))
                                        for s in seeds) if a is not None and b is not None]
            if diffs:
                row[group] = {"mean": _avg(diffs), "se": round(st.stdev(diffs) / len(diffs) ** 0.5, 4)
                              if len(diffs) > 1 else None, "ahead": sum(d > 0 for d in diffs),
                              "of": len(diffs), "min": round(min(diffs), 4), "max": round(max(diffs), 4)}
        out[name] = row
    return out


def points(runs: list[dict], rule: str) -> list[tuple]:
    """(run, the rule's figure, unseen Dice) per run: what r is taken over and what rounds.png draws."""
    return [(r, figure(r, rule), group_dice(r, "unseen")) for r in runs]


def rule_r(runs: list[dict]) -> dict:
    """Pearson r of each rule's figure against the unseen Dice: over all runs, and within each round
    (a round's choice is made among its own runs; rounds on other seeds or machines shift both)."""
    out = {}
    for rule in bc.RULES:
        pts = points(runs, rule)
        out[rule] = {"all_runs": bc._pearson([(x, y) for _, x, y in pts]), "runs": len(pts),
                     "per_round": {d: bc._pearson([(x, y) for r, x, y in pts if r["round"] == d])
                                   for d in sorted({r["round"] for r in runs})}}
    return out


def _avg(xs: list) -> float | None:
    return bc._mean([x for x in xs if x is not None])


def cell(row: dict, group: str, worst: bool = False) -> str:
    """A per_candidate row's group as a table cell: "mean (sd)", or its worst patient "mean, lowest"."""
    g = row.get(group)
    if not g:
        return "-"
    if worst:
        return f"{g['worst_patient']:.3f}, {g['lowest_worst_patient']:.3f}"
    return f"{g['dice']:.3f} ({g['sd']:.3f})"


def markdown(pooled: dict) -> str:
    rule, base = pooled["rule"], pooled["base"]
    lines = [f"| candidate | seeds | rule ({rule}) | old six (sd) | unseen (sd) | unseen worst patient: mean, "
             "lowest | all nine: mean, worst patient |", "|---|---|---|---|---|---|---|"]
    for name, row in pooled["candidates"].items():
        nine = row.get("nine")
        nine_cell = f"{nine['dice']:.3f}, {nine['worst_patient']:.3f}" if nine else "-"
        rule_cell = "-" if row["rule_figure"] is None else f"{row['rule_figure']:.3f}"
        lines.append(f"| {name} | {_seeds(row['seeds'])} | {rule_cell} | {cell(row, 'old')} | "
                     f"{cell(row, 'unseen')} | {cell(row, 'unseen', True)} | {nine_cell} |")
    if pooled["paired"]:
        lines += ["", f"| minus {base}, paired by seed | seeds | old six | unseen | all nine |", "|---|---|---|---|---|"]
        for name, row in pooled["paired"].items():
            def diff(group: str) -> str:
                d = row.get(group)
                if not d:
                    return "-"
                se = "" if d["se"] is None else f" (se {d['se']:.3f})"
                return f"{d['mean']:+.3f}{se}, ahead {d['ahead']}/{d['of']}"
            lines.append(f"| {name} | {_seeds(row['seeds'])} | {diff('old')} | {diff('unseen')} | {diff('nine')} |")
    lines += [""] + [f"- r({rule_name}, unseen) over {r['runs']} runs: {r['all_runs']}; per round: "
                     + ", ".join(f"{Path(d).name} {v}" for d, v in r["per_round"].items())
                     for rule_name, r in pooled["rule_r"].items()]
    return "\n".join(lines) + "\n"


def _seeds(seeds: list[int]) -> str:
    s = sorted(seeds)
    return f"{s[0]}-{s[-1]}" if s == list(range(s[0], s[-1] + 1)) and len(s) > 2 else ",".join(map(str, s))


def plot(runs: list[dict], rule: str, r: float | None, dest: Path) -> str:
    """rounds.png, or why not."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: rounds.png skipped (pip install matplotlib)"
    by: dict[str, list[tuple]] = {}
    for run, x, y in points(runs, rule):
        if x is not None and y is not None:
            by.setdefault(run["candidate"], []).append((x, y))
    if not by:
        return "no run has both an old-patient figure and unseen patients: rounds.png skipped"
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    for name, xy in sorted(by.items()):
        ax.scatter(*zip(*xy), label=name, alpha=0.8)
    ax.set_xlabel(f"old patients: rule figure ({rule})")
    ax.set_ylabel("unseen patients: Dice (g = 1)")
    ax.set_title(f"a point per run; r over all runs = {r}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return ""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("rounds", nargs="+", type=Path, help="bundle_candidates --out folders")
    ap.add_argument("--out", type=Path, required=True, help="where pooled.json, pooled.md and rounds.png go")
    ap.add_argument("--base", help="the candidate the others are paired against (default: the first by name)")
    ap.add_argument("--rule", choices=sorted(bc.RULES), default=bc.RULE)
    args = ap.parse_args(argv)
    runs, notes = load(args.rounds)
    for n in notes:
        print(n, file=sys.stderr)
    if not runs:
        print(f"no runs in {', '.join(map(str, args.rounds))}: give bundle_candidates --out folders", file=sys.stderr)
        return 1
    names = sorted({r["candidate"] for r in runs})
    if args.base and args.base not in names:
        print(f"--base {args.base} ran in none of these rounds; use one of {', '.join(names)}", file=sys.stderr)
        return 2
    base = args.base or names[0]
    rr = rule_r(runs)
    pooled = {"rule": args.rule, "base": base, "rounds": [str(d) for d in args.rounds], "skipped": notes,
              "candidates": per_candidate(runs, args.rule), "paired": paired(runs, base), "rule_r": rr}
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "pooled.json", pooled)
    md = markdown(pooled)
    write_text(args.out / "pooled.md", md)
    print(md, end="")
    why = plot(runs, args.rule, rr[args.rule]["all_runs"], args.out / "rounds.png")
    if why:
        print(why, file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
