"""Several cross-validations side by side, held-out patient by held-out patient.

``echo-eval CV [CV ...] --table`` turns the cv.json of each ``echo-train --folds`` folder into one
row per granularity: each held-out patient's Dice per seed, the Dice of each seed's runs with
their frames pooled, the mean of patients, the worst patient, the lowest single run, and the runs
paired with the first row's (same fold, same seed). Sweeps of one recipe run with other seeds join
into one row with ``+`` (``cv/unet-s12+cv/unet-s34``): every seed of both, as if one sweep had
trained them. It writes the table as Markdown (the recipe tables in
docs/real-echo.md are made the same way), as CSV, and as a picture of every patient's Dice per row.
"""

from __future__ import annotations

import csv
import io
import json
from fractions import Fraction
from pathlib import Path

import numpy as np


def g_name(g: float) -> str:
    """0.5 -> '1/2', 1 -> '1', 0.3 -> '0.3': granularities as the README writes them."""
    f = Fraction(g).limit_denominator(64)
    if abs(float(f) - g) > 1e-9 or (f.numerator != 1 and f.denominator != 1):
        return f"{g:g}"
    return str(f.numerator) if f.denominator == 1 else f"1/{f.denominator}"


def read_rows(folder: Path) -> tuple[dict, list[dict]]:
    """cv.json's header and its scored runs (fold, seed, g, dice, frames, test_videos)."""
    path = Path(folder) / "cv.json"
    if not path.is_file():
        raise ValueError(f"{folder}: no cv.json, so not a cross-validation folder (echo-train --folds K --out "
                         f"{folder} writes one)")
    try:
        info = json.loads(path.read_text())
        rows = [{"fold": int(r["fold"]), "seed": int(r["seed"]), "g": float(r["g"]), "dice": float(r["dice"]),
                 "frames": int(r.get("frames") or 1), "videos": str(r.get("test_videos", ""))}
                for r in info.get("rows", []) if r.get("dice") is not None]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: cannot be read ({exc}); rerun echo-train --folds with --resume") from None
    if not rows:
        raise ValueError(f"{path}: no scored run yet; echo-train --folds --resume trains what is missing")
    return info, rows


def short_names(paths: list[Path]) -> list[str]:
    """Each path by as few of its last components as tell them all apart (``a/unet``, ``b/unet``);
    a path given twice keeps its whole name."""
    paths = [Path(p) for p in paths]
    longest = max((len(p.parts) for p in paths), default=0)
    for k in range(1, longest + 1):
        names = ["/".join(p.parts[-k:]) for p in paths]
        if len(set(names)) == len(names):
            return names
    return [str(p) for p in paths]


def _same_patients(videos: dict, rows: list[dict], folder, how: str) -> None:
    """Record which patient each fold of ``rows`` holds out in ``videos`` ({fold: (videos, folder)});
    refused in one line when a fold held out another one in an earlier folder."""
    for r in rows:
        seen = videos.setdefault(r["fold"], (r["videos"], folder))
        if seen[0] != r["videos"]:
            raise ValueError(f"fold {r['fold']} holds out {seen[0]!r} in {seen[1]} and {r['videos']!r} in {folder}: "
                             f"{how} cross-validations of the same data and --folds")


#: Joins the cross-validation folders of one recipe into one row: ``cv/unet-s12+cv/unet-s34``.
JOIN = "+"


def read_joined(spec: str | Path) -> tuple[dict, list[dict]]:
    """:func:`read_rows` of one folder, or of several sweeps of one recipe joined with ``+`` (an
    existing folder whose name holds a ``+`` is read as that folder): the runs of all of them as one
    cross-validation. Refused in one line when they differ in recipe or --folds, hold out other
    patients in a fold, or both hold a run (same fold, seed and granularity)."""
    from .cv import recipe_differences, sweep_recipe

    spec = Path(spec)
    if spec.exists() or JOIN not in str(spec):
        return read_rows(spec)
    parts = [Path(p) for p in str(spec).split(JOIN)]
    if any(not str(p) or p == Path(".") for p in parts):
        raise ValueError(f"{spec}: an empty folder name in a {JOIN}-joined list; write A{JOIN}B")
    read = [(p, *read_rows(p)) for p in parts]
    first, info, rows = read[0]
    rows = list(rows)
    held = {(r["fold"], r["seed"], r["g"]): first for r in rows}
    videos: dict = {}
    _same_patients(videos, rows, first, "join")
    for folder, other, more in read[1:]:
        if other.get("folds") != info.get("folds"):
            raise ValueError(f"{first} holds a {info.get('folds')}-fold cross-validation, {folder} a "
                             f"{other.get('folds')}-fold one: join sweeps of one --folds")
        differ = recipe_differences(sweep_recipe(info), sweep_recipe(other))
        if differ:
            said = ", ".join(f"{k} {a!r} in {first}, {b!r} in {folder}" for k, a, b in differ[:3])
            said += f", and {len(differ) - 3} more" if len(differ) > 3 else ""
            raise ValueError(f"{first} and {folder} were trained with other recipes ({said}): join only "
                             "sweeps of one recipe; tabulate others side by side")
        _same_patients(videos, more, folder, "join")
        for r in more:
            key = (r["fold"], r["seed"], r["g"])
            if key in held:
                raise ValueError(f"seed {r['seed']} of fold {r['fold']} (g={g_name(r['g'])}) is in both {held[key]} "
                                 f"and {folder}: join sweeps of other seeds")
            held[key] = folder
        rows += more
    label = JOIN.join(short_names(parts))
    seeds = sorted({r["seed"] for r in rows})
    return {**info, "seeds": seeds, "label": label}, rows


def _row(label: str, folder: Path, info: dict, rows: list[dict], g: float) -> dict:
    runs = {(r["fold"], r["seed"]): r for r in rows if r["g"] == g}
    folds = sorted({f for f, _ in runs})
    seeds = sorted({s for _, s in runs})
    per_fold = {f: {s: runs[f, s]["dice"] for s in seeds if (f, s) in runs} for f in folds}
    means = {f: float(np.mean(list(d.values()))) for f, d in per_fold.items()}
    pooled = {}
    for s in seeds:
        mine = [r for (f, t), r in runs.items() if t == s]
        pooled[s] = {"dice": sum(r["dice"] * r["frames"] for r in mine) / sum(r["frames"] for r in mine),
                     "folds": len(mine)}
    worst = min(folds, key=means.get)
    lowest = min(runs, key=lambda k: runs[k]["dice"])
    return {"label": label, "folder": str(folder), "model": info.get("model", "?"), "width": info.get("width"),
            "g": g, "seeds": seeds, "folds": per_fold, "fold_means": means, "pooled": pooled,
            "patients_mean": float(np.mean(list(means.values()))), "worst": {"fold": worst, "dice": means[worst]},
            "lowest": {"fold": lowest[0], "seed": lowest[1], "dice": runs[lowest]["dice"]}}


def build(read: dict[Path, tuple[dict, list[dict]]]) -> dict:
    """The table of cross-validations of the same data and --folds, ``{folder: read_rows(folder)}``:
    one row per folder and granularity, largest g first; paired differences against the first row.
    Rows are named by folder (by as much of its path as tells it from another of the same name)."""
    from .compare import paired_runs

    rows, videos = [], {}
    names = [info.get("label") or Path(f).name for f, (info, _) in read.items()]
    clash = [f for f, n in zip(read, names) if names.count(n) > 1]
    told = dict(zip(clash, short_names(clash)))
    for folder, (info, scored) in read.items():
        _same_patients(videos, scored, folder, "tabulate")
        gs = sorted({r["g"] for r in scored}, reverse=True)
        name = told.get(folder) or info.get("label") or Path(folder).name
        for g in gs:
            rows.append(_row(f"{name} g={g_name(g)}" if len(gs) > 1 else name, folder, info, scored, g))
    folds = sorted(videos)
    ref = rows[0]
    by_run = [{(f, s): d for f, ds in row["folds"].items() for s, d in ds.items()} for row in rows]
    for row, runs in zip(rows, by_run):
        row["paired"] = paired_runs(by_run[0], runs) if row is not ref else None
    return {"folds": folds, "videos": {f: videos[f][0] for f in folds}, "columns": _columns(videos, folds),
            "rows": rows, "reference": ref["label"]}


def _columns(videos: dict, folds: list[int]) -> dict[int, str]:
    """Column names: a fold's one held-out video by the shortest prefix (6 characters or more) that
    tells it from the others, else 'fold i'."""
    single = {f: videos[f][0] for f in folds if videos[f][0] and "," not in videos[f][0] and " " not in videos[f][0]}
    n = 6
    while n < max((len(v) for v in single.values()), default=0) and len({v[:n] for v in single.values()}) < len(single):
        n += 1
    return {f: single[f][:n] if f in single else f"fold {f}" for f in folds}


def _dice(x: float) -> str:
    return f"{x:.3f}"[1:] if 0 <= x < 1 else f"{x:.3f}"


def markdown(table: dict) -> str:
    folds, cols = table["folds"], table["columns"]
    head = ["recipe", *(cols[f] for f in folds), "pooled, seed by seed", "mean of patients", "worst patient",
            "lowest run"]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for r in table["rows"]:
        cells = [" / ".join(_dice(r["folds"][f][s]) if s in r["folds"][f] else "-" for s in r["seeds"])
                 if f in r["folds"] else "-" for f in folds]
        pooled = " / ".join(f"{p['dice']:.3f}" + (f" ({p['folds']} folds)" if p["folds"] < len(folds) else "")
                            for p in r["pooled"].values())
        scored = len(r["fold_means"])
        mean = f"{r['patients_mean']:.3f}" + (f" ({scored} of {len(folds)})" if scored < len(folds) else "")
        w, low = r["worst"], r["lowest"]
        lines.append("| " + " | ".join([r["label"], *cells, pooled, mean, f"{w['dice']:.3f} ({cols[w['fold']]})",
                                        f"{low['dice']:.3f} ({cols[low['fold']]}, seed {low['seed']})"]) + " |")
    seeds = sorted({s for r in table["rows"] for s in r["seeds"]})
    notes = [f"Each cell: the held-out patient's Dice, one run per seed ({', '.join(map(str, seeds))}, in that "
             "order); pooled: each seed's held-out frames together; worst patient: the lowest mean over seeds; "
             "lowest run: the lowest single run's Dice."]
    for r in table["rows"][1:]:
        p = r["paired"]
        if p:
            notes.append(f"- {r['label']} - {table['reference']}, run by run (same fold, same seed): mean "
                         f"{p['mean']:+.4f}, min {p['min']:+.4f}, max {p['max']:+.4f}; ahead in {p['b_ahead']} of "
                         f"{p['runs']}")
    return "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n"


def csv_text(table: dict) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["recipe", "folder", "model", "g", "fold", "held_out", "seed", "dice"])
    for r in table["rows"]:
        for f in table["folds"]:
            for s, d in r["folds"].get(f, {}).items():
                w.writerow([r["label"], r["folder"], r["model"], r["g"], f, table["videos"][f], s, f"{d:.6f}"])
    return buf.getvalue()


OUTPUTS = ("patients.md", "patients.csv", "patients.png")


def write(table: dict, out: Path) -> None:
    """patients.md, patients.csv and patients.png in ``out``: all three, or none of them (each is
    written under a temporary name and renamed when all are complete, as echo-eval writes its
    outputs), so a table that cannot be written leaves an earlier one whole."""
    from contextlib import ExitStack

    from echoseg.atomic import atomic_path

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        tmp_md, tmp_csv, tmp_png = (stack.enter_context(atomic_path(out / name)) for name in OUTPUTS)
        tmp_md.write_text(markdown(table))
        tmp_csv.write_text(csv_text(table))
        plot(table, tmp_png)


def plot(table: dict, path: Path) -> Path:
    """Every held-out patient's Dice per row: seeds as small dots, their mean as a marker joined
    across patients, so a recipe that fails one patient shows as a dip."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .plots import _save_fig

    folds, cols = table["folds"], table["columns"]
    x = np.arange(len(folds))
    rows = table["rows"]
    # the legend goes below the axes, so that however many rows there are it never hides a dip; past
    # ten rows the colours come from a 20-colour cycle, so up to twenty rows no two share one
    legend_rows = len(rows) if len(rows) <= 4 else (len(rows) + 1) // 2
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(folds) + 2.5), 4.0 + 0.22 * legend_rows))
    colours = plt.get_cmap("tab20" if len(rows) > 10 else "tab10").colors
    for i, r in enumerate(rows):
        shift = (i - (len(rows) - 1) / 2) * min(0.12, 0.6 / max(1, len(rows)))
        means = [r["fold_means"].get(f, np.nan) for f in folds]
        line, = ax.plot(x + shift, means, "o-", lw=1, ms=5, color=colours[i % len(colours)],
                        label=f"{r['label']} (mean {r['patients_mean']:.3f}, worst {r['worst']['dice']:.3f}, "
                              f"lowest run {r['lowest']['dice']:.3f})")
        for j, f in enumerate(folds):
            vals = list(r["folds"].get(f, {}).values())
            ax.plot([x[j] + shift] * len(vals), vals, ".", color=line.get_color(), ms=3, alpha=0.6)
    ax.set_xticks(x, [cols[f] for f in folds], rotation=30, ha="right")
    ax.set_xlabel("held-out patient")
    ax.set_ylabel("Dice (dots: seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0.0, -0.25), ncol=1 if len(rows) <= 4 else 2,
              frameon=False)
    ax.set_title("cross-validation by held-out patient")
    _save_fig(fig, Path(path))
    return Path(path)
