"""scripts/bundle_candidates.py: the per-patient scoring and the mixed dataset (the GPU run itself is a
measurement, dry-run by hand with --tiny)."""

from __future__ import annotations

from pathlib import Path

import pytest

@pytest.fixture(scope="module")
def bc(load_script):
    return load_script("bundle_candidates")


def _rows(video: str, split: str, dices: list[float], areas: list[int]) -> list[dict]:
    return [{"name": f"{video}_{i:04d}", "split": split, "dice": str(d), "dice_g0.5": str(d - 0.1),
             "area_true_px": str(a)} for i, (d, a) in enumerate(zip(dices, areas))]


def test_score_per_patient_groups_worst_and_phase_thirds(bc):
    frames = (_rows("PA", "train", [0.9, 0.8, 0.7], [300, 200, 100])
              + _rows("PB", "val", [0.5, 0.5, 0.5], [10, 20, 30])
              + _rows("PC", "test", [0.6, 0.8, 1.0], [1, 2, 3]))
    s = bc.score(frames)
    assert s["patients"]["PA"] == {"split": "train", "frames": 3, "dice": 0.8, "dice_g0.5": 0.7,
                                   "dice_large": 0.9, "dice_small": 0.7}
    old = s["groups"]["old"]
    assert old["frames"] == 6 and old["dice"] == pytest.approx(0.65) and old["worst_patient"] == 0.5
    assert old["patient_mean"] == pytest.approx(0.65) and old["patient_mean_trimmed"] == 0.8  # PB, the worst, left out
    assert s["groups"]["unseen"]["patient_mean_trimmed"] == 0.8  # one patient: nothing to leave out
    assert s["groups"]["unseen"]["dice_large"] == 1.0 and s["groups"]["unseen"]["dice_small"] == 0.6


def test_summary_chooses_on_old_patients_only(bc, tmp_path):
    def result(cand, seed, old, unseen, trimmed=None):
        return {"candidate": cand, "seed": seed, "checkpoint": str(tmp_path / "missing.pt"),
                "groups": {"old": {"frames": 1, "dice": old, "dice_g0.5": old, "patient_mean": old,
                                   "patient_mean_trimmed": old if trimmed is None else trimmed,
                                   "worst_patient": old, "dice_large": old, "dice_small": old},
                           "unseen": {"frames": 1, "dice": unseen, "dice_g0.5": unseen, "patient_mean": unseen,
                                      "worst_patient": unseen, "dice_large": unseen, "dice_small": unseen}},
                "patients": {}}
    results = [result("v1-500-e2", 13, 0.80, 0.95), result("v1-500-e2", 14, 0.82, 0.95),
               result("v2-500-e2", 13, 0.84, 0.60), result("v2-500-e2", 14, 0.83, 0.60)]
    s = bc.write_summary(tmp_path, results, [], ["v1-500-e2", "v2-500-e2"], [13, 14], 1.0, lambda m: None)
    assert s["chosen"] == "v2-500-e2" and s["chosen_seed"] == 13  # the unseen scores never enter
    assert s["table"]["v2-500-e2"]["old_dice_spread"] == pytest.approx(0.01)
    assert (tmp_path / "summary.json").is_file() and (tmp_path / "summary.csv").read_text().count("ALL-old") == 4
    assert s["rule_vs_unseen_r"] == pytest.approx(-0.845, abs=1e-3) and s["rule"].startswith("old-trimmed")


def test_the_trimmed_rule_is_not_swayed_by_one_patient(bc, tmp_path):
    def result(cand, seed, pooled, trimmed, unseen):
        g = {"frames": 1, "dice": pooled, "dice_g0.5": pooled, "patient_mean": pooled, "patient_mean_trimmed": trimmed,
             "worst_patient": 0.4, "dice_large": pooled, "dice_small": pooled}
        return {"candidate": cand, "seed": seed, "checkpoint": str(tmp_path / "missing.pt"),
                "groups": {"old": g, "unseen": dict(g, dice=unseen)}, "patients": {}}

    # A finds one hard patient's LV in one seed (pooled Dice up), B is better on the rest in both seeds
    results = [result("v1-500-e2", 13, 0.86, 0.87, 0.80), result("v1-500-e2", 14, 0.83, 0.87, 0.81),
               result("v3-500-e2", 13, 0.84, 0.89, 0.84), result("v3-500-e2", 14, 0.84, 0.88, 0.85)]
    say = lambda m: None  # noqa: E731
    names = ["v1-500-e2", "v3-500-e2"]
    s = bc.write_summary(tmp_path, results, [], names, [13, 14], 1.0, say, rule="old")
    assert s["chosen"] == "v1-500-e2" and s["chosen_seed"] == 13
    s = bc.write_summary(tmp_path, results, [], names, [13, 14], 1.0, say, rule="old-trimmed")
    assert s["chosen"] == "v3-500-e2" and s["chosen_seed"] == 13 and s["rule_vs_unseen_r"] == pytest.approx(0.804, abs=1e-3)
    assert bc._pearson([(1, 2), (2, 4)]) is None and bc._pearson([(1, 2), (1, 3), (1, 4)]) is None


def test_link_union_keeps_videos_apart(bc, tmp_path):
    for part in ("a", "b"):
        for split in ("train", "test"):
            for kind in ("images", "masks"):
                d = tmp_path / part / split / kind
                d.mkdir(parents=True)
                (d / f"SYN013_00000_{split == 'test':04d}.png").write_bytes(part.encode())
    bc.link_union(tmp_path / "mix", [tmp_path / "a", tmp_path / "b"])
    names = sorted(p.name for p in (tmp_path / "mix" / "train" / "images").iterdir())
    assert names == ["ASYN013_00000_0000.png", "BSYN013_00000_0000.png"]
    assert (tmp_path / "mix" / "test" / "masks" / "BSYN013_00000_0001.png").read_bytes() == b"b"


def test_summarize_finetune_pairs_folds(bc):
    rows = [{"arm": "scratch", "fold": 0, "patient": "P0", "dice": 0.80, "dice_g0.5": 0.7},
            {"arm": "init", "fold": 0, "patient": "P0", "dice": 0.85, "dice_g0.5": 0.8},
            {"arm": "scratch", "fold": 1, "patient": "P1", "dice": 0.60, "dice_g0.5": 0.5},
            {"arm": "init", "fold": 1, "patient": "P1", "dice": 0.58, "dice_g0.5": 0.5},
            {"arm": "scratch", "fold": 2, "patient": "P2", "dice": 0.90, "dice_g0.5": 0.9}]
    s = bc.summarize_finetune(rows)
    assert s["scratch"]["folds"] == 3 and s["scratch"]["worst"] == 0.60 and s["init"]["per_patient"]["P1"] == 0.58
    assert s["init_minus_scratch"] == {"folds": 2, "mean": pytest.approx(0.015), "min": -0.02, "max": 0.05}


def test_every_candidate_names_a_style_and_an_augmentation_that_exist(bc):
    from echoseg.data.augment import STRENGTHS
    from echoseg.data.synthetic import STYLES

    for name, c in bc.CANDIDATES.items():
        assert c["style"] in (*STYLES, "mix") and c["style"] != "classic", name
        assert c["augment"] in STRENGTHS and c["videos"] > 0 and c["epochs"] > 0, name
    assert set(bc.DEFAULT) <= set(bc.CANDIDATES) and set(bc.MIX) <= set(STYLES)


def test_run_job_trains_with_the_candidates_shift_consistency(bc, tmp_path, monkeypatch):
    import echoseg.train.loop as loop

    seen = []
    monkeypatch.setattr(loop, "train", lambda cfg: (seen.append(cfg), Path(cfg.out).mkdir()))
    monkeypatch.setattr(bc, "score", lambda frames: {"frames": len(frames)})
    c = bc.CANDIDATES["v3-500-e2-sc"]
    for spec_extra, want in (({"shift_consistency": c["shift_consistency"]}, 1.0), ({}, 0.0)):
        spec = dict(candidate="v3-500-e2-sc", seed=13, data=str(tmp_path / "d"), run=str(tmp_path / "run"), width=8,
                    epochs=1, augment=c["augment"], device="cpu", real=str(tmp_path / "no-real"), loader_workers=0,
                    **spec_extra)
        r = bc.run_job(spec)
        assert seen[-1].shift_consistency == want and seen[-1].recon_weight == 0.1 and r["frames"] == 0


def test_run_finetune_trains_each_arm_as_echo_train_would(bc, tmp_path, monkeypatch):
    """The init arm gets the recipe echo-train gives a matae-unet started from the bundle, the scratch
    arm the one from random weights; both read the fold's held-out frames back."""
    import echoseg.train.cv as cv
    from echoseg.train.init import FULL_LR, SHIFT_CONSISTENCY

    seen = []

    def fake_cv(cfg, folds, seeds, only):
        seen.append(cfg)
        ev = Path(cfg.out) / f"fold{only[0]}-seed1" / "eval-test"
        ev.mkdir(parents=True)
        (ev / "frames.csv").write_text("name,dice,dice_g0.5\nPA_0001,0.8,0.7\nPA_0002,0.6,0.5\n")

    monkeypatch.setattr(cv, "run_cv", fake_cv)
    base = dict(kind="finetune", fold=2, folds=9, data=str(tmp_path / "real"), width=8, epochs=1, device="cpu",
                loader_workers=0)
    init = bc.run_finetune(dict(base, arm="init", init=str(tmp_path / "chosen.pt"), run=str(tmp_path / "i")))
    scratch = bc.run_finetune(dict(base, arm="scratch", init="", run=str(tmp_path / "s")))
    tuned, fresh = seen
    assert (tuned.augment_strength, tuned.distill, tuned.full_lr, tuned.shift_consistency) == (
        "heavy-valve", 0.0, FULL_LR, SHIFT_CONSISTENCY)
    assert tuned.init == str(tmp_path / "chosen.pt")
    assert (fresh.augment_strength, fresh.full_lr, fresh.shift_consistency, fresh.init) == ("light", 0.0, 0.0, "")
    assert fresh.distill > 0
    assert init["dice"] == scratch["dice"] == 0.7 and init["patient"] == "PA" and init["frames"] == 2
