"""scripts/bundle_rounds.py: pooling rounds of bundle candidates (figures checked by hand)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def br(load_script):
    return load_script("bundle_rounds")


def _run(candidate: str, seed: int, old: list[float], unseen: list[float]) -> dict:
    """A run as bundle_candidates keeps it: patients with equal frames, so pooled Dice = patients' mean."""
    patients = {f"O{i}": {"split": "train", "dice": d} for i, d in enumerate(old)}
    patients.update({f"U{i}": {"split": "test", "dice": d} for i, d in enumerate(unseen)})
    groups = {"old": {"dice": round(sum(old) / len(old), 4)},
              "unseen": {"dice": round(sum(unseen) / len(unseen), 4), "worst_patient": min(unseen)}}
    return {"candidate": candidate, "seed": seed, "groups": groups, "patients": patients}


def _round(path: Path, runs: list[dict]) -> Path:
    path.mkdir(parents=True)
    (path / "summary.json").write_text(json.dumps({"runs": runs}))
    return path


def test_candidates_and_pairs_pool_over_rounds(br, tmp_path):
    r1 = _round(tmp_path / "r1", [_run("a", 1, [0.9, 0.8, 0.4], [0.8, 0.6]), _run("b", 1, [0.9, 0.9, 0.3], [0.9, 0.7])])
    r2 = _round(tmp_path / "r2", [_run("a", 2, [0.8, 0.8, 0.5], [0.7, 0.7]), _run("b", 2, [0.8, 0.7, 0.6], [0.6, 0.6])])
    runs, notes = br.load([r1, r2])
    assert notes == [] and [(r["candidate"], r["seed"]) for r in runs] == [("a", 1), ("a", 2), ("b", 1), ("b", 2)]
    c = br.per_candidate(runs, "old-trimmed")
    # a: trimmed old (0.85, 0.8) -> 0.825; unseen 0.7, 0.7; unseen worst 0.6, 0.7; all nine means 0.7, 0.7
    assert c["a"]["rule_figure"] == 0.825 and c["a"]["unseen"]["dice"] == 0.7 and c["a"]["unseen"]["sd"] == 0.0
    assert c["a"]["unseen"]["worst_patient"] == 0.65 and c["a"]["unseen"]["lowest_worst_patient"] == 0.6
    assert c["a"]["nine"]["dice"] == 0.7 and c["a"]["nine"]["worst_patient"] == 0.45
    assert c["b"]["rule_figure"] == 0.825 and c["b"]["per_patient"]["U0"] == 0.75
    p = br.paired(runs, "a")["b"]
    # b - a, unseen: +0.1 at seed 1, -0.1 at seed 2
    assert p["seeds"] == [1, 2] and p["unseen"]["mean"] == 0.0 and p["unseen"]["ahead"] == 1
    assert p["unseen"]["min"] == -0.1 and p["unseen"]["max"] == 0.1 and p["unseen"]["se"] == 0.1
    # all nine, patients' mean: a 0.70, 0.70; b 0.74, 0.66
    assert p["nine"]["min"] == -0.04 and p["nine"]["max"] == 0.04 and p["old"]["ahead"] == 0


def test_the_trimmed_figure_is_the_one_a_round_chooses_by(br, tmp_path):
    """Computed from the patients kept, as bundle_candidates.score computes it from the frames."""
    bc = br.bc
    frames = [{"name": f"{v}_{i:04d}", "split": s, "dice": str(d), "dice_g0.5": str(d), "area_true_px": str(10 + i)}
              for v, s, ds in (("PA", "train", [0.9, 0.7]), ("PB", "val", [0.3, 0.5]), ("PC", "train", [0.8, 0.8]),
                               ("PD", "test", [0.6, 0.6]))
              for i, d in enumerate(ds)]
    run = dict(candidate="x", seed=1, **bc.score(frames))
    assert br.figure(run, "old-trimmed") == run["groups"]["old"]["patient_mean_trimmed"] == 0.8
    assert br.figure(run, "old") == run["groups"]["old"]["dice"]


def test_a_seed_in_two_rounds_counts_once_and_bad_folders_are_said(br, tmp_path):
    r1 = _round(tmp_path / "r1", [_run("a", 1, [0.5, 0.5], [0.5])])
    r2 = _round(tmp_path / "r2", [_run("a", 1, [0.9, 0.9], [0.9])])
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "summary.json").write_text("{not json")
    (tmp_path / "log.out").write_text("")
    runs, notes = br.load([r1, tmp_path / "missing", broken, tmp_path / "log.out", r2])
    assert len(runs) == 1 and runs[0]["groups"]["old"]["dice"] == 0.9 and runs[0]["round"] == str(r2)
    assert any("missing: no such folder" in n for n in notes) and any("log.out: not a folder" in n for n in notes)
    assert any("broken" in n and "not a bundle_candidates summary" in n for n in notes)
    assert any(f"in {r1} and {r2}; {r2} kept" in n for n in notes)


def test_rule_r_over_all_runs_and_within_each_round(br, tmp_path):
    # round 1: rule figure up, unseen up (r = 1); round 2: up and down (r = -1)
    r1 = _round(tmp_path / "r1", [_run("a", s, [0.5 + 0.1 * s] * 2, [0.5 + 0.1 * s]) for s in (1, 2, 3)])
    r2 = _round(tmp_path / "r2", [_run("b", s, [0.5 + 0.1 * s] * 2, [0.9 - 0.1 * s]) for s in (1, 2, 3)])
    runs, _ = br.load([r1, r2])
    r = br.rule_r(runs)["old-trimmed"]
    assert r["per_round"] == {str(r1): 1.0, str(r2): -1.0} and r["runs"] == 6 and r["all_runs"] == 0.0


def test_main_writes_the_tables_and_the_plot(br, tmp_path, capsys):
    r1 = _round(tmp_path / "r1", [_run(c, s, [0.8, 0.7, 0.6], [0.7 + 0.01 * s, 0.6]) for c in ("a", "b")
                                  for s in (1, 2, 3)])
    out = tmp_path / "pooled"
    assert br.main([str(r1), "--out", str(out), "--base", "b"]) == 0
    md = (out / "pooled.md").read_text()
    assert "| a | 1-3 | 0.750 |" in md and "| minus b, paired by seed |" in md and "| a | 1-3 | +0.000" in md
    assert json.loads((out / "pooled.json").read_text())["base"] == "b"
    assert (out / "rounds.png").stat().st_size > 0
    assert br.main([str(r1), "--out", str(out), "--base", "zz"]) == 2
    assert "--base zz ran in none of these rounds" in capsys.readouterr().err
    assert br.main([str(tmp_path / "nothing"), "--out", str(out)]) == 1


def test_a_round_without_old_patients_still_tabulates(br, tmp_path, capsys):
    run = _run("a", 1, [0.5], [0.7])
    run["patients"] = {k: v for k, v in run["patients"].items() if v["split"] == "test"}
    run["groups"].pop("old")
    r1 = _round(tmp_path / "r1", [run])
    assert br.main([str(r1), "--out", str(tmp_path / "o")]) == 0
    assert "| a | 1 | - | - | 0.700 (0.000) |" in (tmp_path / "o" / "pooled.md").read_text()
    assert "rounds.png skipped" in capsys.readouterr().err and not (tmp_path / "o" / "rounds.png").exists()
