"""echo-train --init: start from a run's or the bundled model's weights (issue 21)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_export_fixtures import export_base, exported, no_tensorrt  # noqa: F401

torch = pytest.importorskip("torch")

from echoseg import pretrained  # noqa: E402
from echoseg.config import TrainConfig  # noqa: E402
from echoseg.models.checkpoint import build_from_checkpoint, load_checkpoint  # noqa: E402
from echoseg.train.init import InitError, apply_init, initial_model, load_init  # noqa: E402
from echoseg.train.loop import model_config  # noqa: E402


def _logits(model, x, g):
    model.eval()
    with torch.no_grad():
        return model(x, g)


def test_init_from_a_run_gives_the_same_logits_at_step_0(matae_ckpt):
    ckpt = load_checkpoint(matae_ckpt)
    cfg = TrainConfig(model="matae-unet", width=8, init=str(matae_ckpt.parent))  # a run folder
    assert model_config(cfg).granularities != ckpt.model.granularities  # the run would build other BNs...
    mcfg, spec, model = initial_model(cfg, model_config(cfg))
    assert mcfg.granularities == ckpt.model.granularities  # ...so it takes the source's
    assert spec == ckpt.input_spec  # and the normalisation its weights expect
    ref = build_from_checkpoint(ckpt)
    x = torch.randn(2, 3, 112, 112, generator=torch.Generator().manual_seed(0))
    for g in mcfg.granularities:
        a, b = _logits(model, x, g), _logits(ref, x, g)
        assert torch.equal(a, b), g
    fresh = initial_model(TrainConfig(model="matae-unet", width=8, init=str(matae_ckpt)), mcfg, load=False)[2]
    assert not torch.equal(_logits(fresh, x, 1.0), _logits(ref, x, 1.0))  # load=False (resume) leaves them


def test_a_unet_starts_from_a_mataes_full_width(matae_ckpt):
    cfg = TrainConfig(model="unet", width=8, init=str(matae_ckpt))
    mcfg, spec, model = initial_model(cfg, model_config(cfg))
    ckpt = load_checkpoint(matae_ckpt)
    assert (mcfg.name, mcfg.granularities, type(model).__name__) == ("unet", (1.0,), "UNet")
    assert spec == ckpt.input_spec
    ref = build_from_checkpoint(ckpt)
    x = torch.randn(2, 3, 112, 112, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(_logits(model, x, None), _logits(ref, x, 1.0), atol=1e-5)  # granularity 1, its BN
    assert not torch.allclose(_logits(model, x, None), _logits(ref, x, 0.5), atol=1e-3)


def test_a_mismatched_model_is_refused_in_one_line(matae_ckpt, unet_ckpt):
    with pytest.raises(InitError) as e:
        initial_model(TrainConfig(model="unet", width=16, init=str(matae_ckpt)), model_config(TrainConfig(width=16)))
    msg = str(e.value)
    assert "\n" not in msg and "its weights are matae-unet width 8, this run builds unet width 16" in msg
    assert msg.endswith("pass --width 8")
    with pytest.raises(InitError, match="its weights are unet width 8, this run builds matae-unet width 8"):
        cfg = TrainConfig(model="matae-unet", width=8, init=str(unet_ckpt))
        initial_model(cfg, model_config(cfg))
    cfg = TrainConfig(model="matae-unet", width=16, init=str(matae_ckpt))
    with pytest.raises(InitError, match="width 8, this run builds matae-unet width 16"):
        initial_model(cfg, model_config(cfg))
    cfg = TrainConfig(model="matae-unet", width=8, granularities=(0.5, 1.0), init=str(matae_ckpt))
    with pytest.raises(InitError, match=r"granularities 0.125, 0.25, 0.5, 1, this run asks for 0.5, 1; drop"):
        initial_model(cfg, model_config(cfg))
    # same names, another shape: named, with the shapes
    init = load_init(str(unet_ckpt))
    key = next(k for k in init.state if k.endswith("conv1.weight"))
    init.state[key] = init.state[key][:, :1]
    with pytest.raises(InitError, match=rf"1 of other shape \(e.g. {key}: "):
        apply_init(build_from_checkpoint(load_checkpoint(unet_ckpt)), init)
    with pytest.raises(InitError, match="--init nowhere: .*no such checkpoint"):
        load_init("nowhere")


def test_echo_train_init_runs_and_records_its_source(synth_dir, matae_ckpt, tmp_path):
    from typer.testing import CliRunner

    from echoseg.train.cli import train_app

    out = tmp_path / "ft"
    r = CliRunner().invoke(train_app, ["--data", str(synth_dir),  # --model and --width: the source's
                                       "--epochs", "1", "--batch-size", "8", "--max-train-frames", "16",
                                       "--device", "cpu", "--init", str(matae_ckpt), "--out", str(out)])
    assert r.exit_code == 0, r.output
    ft = load_checkpoint(out)
    src = load_checkpoint(matae_ckpt)
    assert ft.train_config.init == str(matae_ckpt) and ft.input_spec == src.input_spec
    assert ft.model.granularities == src.model.granularities
    assert (ft.model.name, ft.model.width) == ("matae-unet", 8)
    bad = CliRunner().invoke(train_app, ["--data", str(synth_dir), "--model", "unet", "--width", "16", "--epochs", "1",
                                         "--init", str(matae_ckpt), "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2
    lines = [ln for ln in bad.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "pass --width 8" in lines[0]
    assert not (tmp_path / "bad").exists()
    u = CliRunner().invoke(train_app, ["--data", str(synth_dir), "--model", "unet",  # width: the source's
                                       "--epochs", "1", "--batch-size", "8", "--max-train-frames", "16",
                                       "--device", "cpu", "--init", str(matae_ckpt), "--out", str(tmp_path / "u")])
    assert u.exit_code == 0, u.output
    ft = load_checkpoint(tmp_path / "u")
    assert (ft.model.name, ft.model.width, ft.model.granularities) == ("unet", 8, (1.0,))
    assert not any(k.startswith("recon.") for k in ft.state_dict)


# --- the bundled weights ---------------------------------------------------------------------------


@pytest.fixture()
def bundled_with_weights(monkeypatch, tmp_path, exported):  # noqa: F811
    from echoseg.pretrained import bundle as b

    dest = tmp_path / "pkg" / "echo-synth-matae-w16"
    monkeypatch.setattr(pretrained, "FOLDER", dest)
    ckpt = json.loads((exported / "matae-unet" / "manifest.json").read_text())["checkpoint"]
    b.bundle(exported / "matae-unet", dest, checkpoint=ckpt)
    return dest, ckpt


def test_bundle_writes_weights_that_init_pretrained_loads(bundled_with_weights):
    from echoseg.artifacts import file_sha256
    from echoseg.pretrained.weights import read_weights

    dest, ckpt_path = bundled_with_weights
    man = json.loads((dest / "manifest.json").read_text())
    entry = next(e for e in man["files"] if e["file"] == "weights.npz")
    assert entry["sha256"] == file_sha256(dest / "weights.npz")
    state, meta = read_weights(dest / "weights.npz")
    ckpt = load_checkpoint(ckpt_path)
    assert meta["source_sha256"] == man["source_sha256"] and meta["model"]["name"] == "matae-unet"
    assert set(state) == set(ckpt.state_dict)
    w = "head.weight" if "head.weight" in state else next(k for k in state if k.endswith("weight"))
    assert state[w].dtype == np.float16
    cfg = TrainConfig(model="matae-unet", width=8, init="pretrained")
    mcfg, spec, model = initial_model(cfg, model_config(cfg))
    assert spec == ckpt.input_spec and mcfg.granularities == ckpt.model.granularities
    for k, v in model.state_dict().items():  # the shipped values, FP16-rounded
        want = ckpt.state_dict[k]
        want = want.half().float() if want.is_floating_point() else want
        assert torch.equal(v, want), k


def test_init_pretrained_refuses_weights_that_do_not_match_the_manifest(bundled_with_weights):
    dest, _ = bundled_with_weights
    p = dest / "weights.npz"
    b = bytearray(p.read_bytes())
    b[len(b) // 2] ^= 0xFF  # same size, one byte flipped
    p.write_bytes(bytes(b))
    with pytest.raises(InitError) as exc:
        initial_model(TrainConfig(model="matae-unet", width=8, init="pretrained"),
                      model_config(TrainConfig(model="matae-unet", width=8)))
    msg = str(exc.value)
    assert "\n" not in msg and "weights.npz: refused, its sha256 does not match manifest.json" in msg


def test_bundle_refuses_a_run_that_is_not_the_exported_one(exported, matae_ckpt, tmp_path):  # noqa: F811
    from echoseg.pretrained.bundle import bundle

    with pytest.raises(SystemExit, match="not the checkpoint this export was made from"):
        bundle(exported / "matae-unet", tmp_path / "dest", checkpoint=matae_ckpt)
    assert not (tmp_path / "dest").exists()


def test_init_pretrained_without_weights_says_how_to_get_them(monkeypatch, tmp_path):
    monkeypatch.setattr(pretrained, "FOLDER", tmp_path / "empty")
    with pytest.raises(InitError, match="--init pretrained: .*weights.npz: no such weights file; rebuild the "
                                        "bundle with `make pretrained`"):
        load_init("pretrained")


def test_weights_files_are_read_without_pickle(tmp_path):
    from echoseg.pretrained.weights import WeightsError, read_weights, write_weights

    p = write_weights(tmp_path / "w.npz", {"a": np.arange(3, dtype=np.float32), "n": np.array(5)}, {"model": {}})
    state, meta = read_weights(p)
    assert state["a"].dtype == np.float16 and state["n"] == 5 and meta["format"] == "echoseg-weights"
    np.savez(tmp_path / "evil.npz", a=np.array([{"x": 1}], dtype=object), __meta__=np.array("{}"))
    with pytest.raises(WeightsError, match="not a readable echoseg weights file"):
        read_weights(tmp_path / "evil.npz")


@pytest.mark.shipped_bundle
@pytest.mark.skipif(not (pretrained.FOLDER / "weights.npz").is_file(), reason="no weights.npz shipped yet")
def test_the_shipped_weights_start_a_matae_unet_w16():
    cfg = TrainConfig(model="matae-unet", width=16, init="pretrained")
    mcfg, spec, model = initial_model(cfg, model_config(cfg))
    man = json.loads((pretrained.FOLDER / "manifest.json").read_text())
    assert mcfg.to_dict()["granularities"] == man["model"]["granularities"]
    assert list(spec.mean) == man["input_spec"]["mean"]
    x = torch.zeros(1, 3, 112, 112)
    assert torch.isfinite(_logits(model, x, 1.0)).all()


def test_model_card_names_the_synthetic_style():
    from echoseg.pretrained.bundle import model_card

    man = {"model": {"name": "matae-unet", "width": 16}, "input_spec": {"height": 112, "width": 112},
           "files": [{"file": "model.fp16.onnx"}, {"file": "weights.npz"}]}
    assert "Only `echo-synth --style echo2` videos" in model_card(man, None, None, None, style="echo2")
    assert "Only `echo-synth --style echo` videos" in model_card(man, None, None, None)


# --- --init auto, echo-train's default -------------------------------------------------------------


def test_auto_starts_from_the_bundle_where_it_fits(bundled_with_weights):
    from echoseg.train.init import Resolved, resolve

    src = load_init("pretrained").model  # the fixture's bundle: a matae-unet of width 8
    assert (src.name, src.width) == ("matae-unet", 8)
    r = resolve(None, "unet", 8)
    assert r.init == "pretrained" and "its full-width network" in r.said and "--init none" in r.said
    m = resolve("auto", "matae-unet", 8, tuple(src.granularities))  # the bundle's own granularities
    assert m.init == "pretrained" and "all its granularities" in m.said
    assert resolve(None, "unet", 16) == Resolved("")  # another width: random weights, nothing said
    other = (1.0,) if tuple(src.granularities) != (1.0,) else (0.5, 1.0)
    g = resolve(None, "matae-unet", 8, other)
    assert g.init == "" and "drop --granularity" in g.said and "\n" not in g.said
    assert resolve("none", "unet", 8) == Resolved("") == resolve("Scratch", "matae-unet", 8)
    assert resolve(None, "unet", 8, earlier="") == Resolved("")  # a resumed run goes on as it started
    assert resolve(None, "unet", 16, earlier="pretrained", earlier_augment="light", earlier_lr=1e-3) == \
        Resolved("pretrained")
    assert r.augment_strength == "heavy" and "heavy augmentation" in r.said  # as it was trained
    # matae-unet: heavy with valve-plane dropout (its smaller networks' worst patient), said so
    assert m.augment_strength == "heavy-valve" and "with valve-plane dropout" in m.said
    assert "valve" not in r.said and "valve" not in resolve(None, "unet", 8, lr=1e-3).said
    assert resolve(None, "unet", 8, augment="light") == Resolved("pretrained", r.said.replace(
        ", heavy augmentation, as it was trained", ""), "light", lr=3e-4)  # asked for: as asked
    named = resolve("pretrained", "unet", 8)  # named: heavy too, and said in a line
    assert named.augment_strength == "heavy" and "--augment-strength light" in named.said
    assert resolve(None, "unet", 16).augment_strength == "light"  # no bundle start: light, as before
    assert resolve("runs/x", "unet", 8) == Resolved("runs/x")  # a named source is the user's to check
    # distillation: a matae-unet from the bundle learns its smaller networks from the labels alone, unless asked
    assert (m.distill, r.distill) == (0.0, 0.5) and "--distill 0" in m.said and "distill" not in r.said
    asked = resolve(None, "matae-unet", 8, tuple(src.granularities), distill=0.5)
    assert asked.distill == 0.5 and "distill" not in asked.said
    assert resolve(None, "matae-unet", 16).distill == 0.5  # no bundle start: half, as before
    assert resolve(None, "matae-unet", 8, earlier="pretrained", earlier_augment="heavy", earlier_distill=0.5,
                   earlier_lr=1e-3, earlier_full_lr=0.0, earlier_shift_consistency=0.0) == Resolved(
        "pretrained", "", "heavy", 0.5, 1e-3, 0.0, 0.0)
    # the learning rate: a unet from the bundle is fine-tuned gently, unless asked or resumed otherwise
    assert (r.lr, named.lr) == (3e-4, 3e-4) and "learning rate 3e-4" in r.said
    assert "--lr 1e-3" in named.said and "\n" not in named.said
    assert resolve(None, "unet", 16).lr == 1e-3 and resolve("none", "unet", 8).lr == 1e-3  # random weights
    fast = resolve(None, "unet", 8, lr=1e-3)
    assert fast.lr == 1e-3 and "learning rate" not in fast.said and "heavy augmentation" in fast.said
    assert resolve(None, "unet", 8, earlier="pretrained", earlier_lr=5e-4).lr == 5e-4
    named_m = resolve("pretrained", "matae-unet", 8)
    assert named_m.distill == 0.0 and "--distill 0.5 to distil" in named_m.said and "\n" not in named_m.said
    assert named_m.augment_strength == "heavy-valve" and "--augment-strength heavy without it" in named_m.said
    plain = resolve(None, "matae-unet", 8, tuple(src.granularities), augment="heavy")
    assert plain.augment_strength == "heavy" and "augmentation" not in plain.said  # asked for: as asked
    assert resolve(None, "matae-unet", 16).augment_strength == "light"  # no bundle start: light, as before
    assert m.lr == named_m.lr == 1e-3 and "learning rate" not in m.said + named_m.said  # matae-unet: as before
    # the full network's own weights: 3e-4 for a matae-unet from the bundle, said in its line; --full-lr 0 turns it
    # off; a resumed run keeps its rate (0 for one started before the default); no bundle start, or a unet: 0
    assert m.full_lr == named_m.full_lr == 3e-4
    assert "the full network's own weights at 3e-4 (--full-lr 0 for --lr)" in m.said
    assert "the weights only the full network uses at 3e-4 (--full-lr 0: at --lr like the rest)" in named_m.said
    off = resolve(None, "matae-unet", 8, tuple(src.granularities), full_lr=0.0)
    assert off.full_lr == 0.0 and "full-lr" not in off.said and "valve-plane" in off.said
    assert resolve(None, "matae-unet", 8, earlier="pretrained", earlier_full_lr=0.0).full_lr == 0.0
    assert resolve(None, "matae-unet", 8, earlier="pretrained", earlier_full_lr=1e-4).full_lr == 1e-4
    assert resolve(None, "matae-unet", 16).full_lr == 0.0 and resolve("none", "matae-unet", 8).full_lr == 0.0
    assert r.full_lr == 0.0 and "full" not in r.said.replace("full-width", "")
    # the shift consistency loss: on (1) for a matae-unet from the bundle, said in its line, with the cost where
    # the bundle is named; --shift-consistency 0 turns it off; a resumed run keeps what it had (0 for one started
    # before the default); no bundle start, or a unet: off
    assert m.shift_consistency == named_m.shift_consistency == 1.0
    assert "masks that move with the frame (--shift-consistency 0 for off)" in m.said
    assert "1.5x an epoch's time (--shift-consistency 0 for off)" in named_m.said and "\n" not in named_m.said
    quiet = resolve(None, "matae-unet", 8, tuple(src.granularities), shift_consistency=0.0)
    assert quiet.shift_consistency == 0.0 and "shift" not in quiet.said and "full network's own" in quiet.said
    assert resolve(None, "matae-unet", 8, earlier="pretrained", earlier_shift_consistency=0.0).shift_consistency == 0
    assert resolve(None, "matae-unet", 8, earlier="pretrained", earlier_shift_consistency=2.0).shift_consistency == 2
    assert resolve(None, "matae-unet", 16).shift_consistency == 0.0
    assert resolve("none", "matae-unet", 8).shift_consistency == 0.0
    assert r.shift_consistency == 0.0 and "shift" not in r.said and "shift" not in named.said


def test_auto_without_bundled_weights_trains_from_random_weights_and_says_why(monkeypatch, tmp_path):
    from echoseg.train.init import Resolved, resolve

    monkeypatch.setattr(pretrained, "FOLDER", tmp_path / "empty")
    r = resolve(None, "matae-unet", 16)
    assert r.init == "" and "cannot be started from" in r.said and "make pretrained" in r.said
    assert "\n" not in r.said
    assert resolve(None, "unet", 64) == Resolved("")  # a width the bundle never fits: nothing to say


def test_echo_train_starts_from_the_bundle_by_default_and_resumes_as_it_started(bundled_with_weights, synth_dir,
                                                                                 tmp_path):
    import hashlib

    from typer.testing import CliRunner

    from echoseg.train.cli import train_app

    dest, _ = bundled_with_weights
    base = ["--data", str(synth_dir), "--model", "unet", "--width", "8", "--batch-size", "8",
            "--max-train-frames", "16", "--device", "cpu"]

    def config(out):
        return json.loads((out / "train_config.json").read_text())

    auto, none = tmp_path / "auto", tmp_path / "none"
    r = CliRunner().invoke(train_app, base + ["--epochs", "1", "--out", str(auto)])
    assert r.exit_code == 0, r.output
    assert "starting from the bundled model" in r.output and "learning rate 3e-4" in r.output
    sha = hashlib.sha256((dest / "weights.npz").read_bytes()).hexdigest()
    assert (config(auto)["init"], config(auto)["init_sha256"], config(auto)["augment_strength"]) == \
        ("pretrained", sha, "heavy")
    assert load_checkpoint(auto).input_spec == load_init("pretrained").input_spec  # the bundle's normalisation
    r = CliRunner().invoke(train_app, base + ["--epochs", "1", "--init", "none", "--out", str(none)])
    assert r.exit_code == 0, r.output
    assert "bundled" not in r.output
    assert (config(none)["init"], config(none)["init_sha256"], config(none)["augment_strength"]) == ("", "", "light")
    assert load_checkpoint(none).input_spec != load_init("pretrained").input_spec  # its own data's
    assert (config(auto)["lr"], config(none)["lr"]) == (3e-4, 1e-3)  # fine-tuned gently; random weights as ever
    for out, init, strength, lr in ((none, "", "light", 1e-3), (auto, "pretrained", "heavy", 3e-4)):  # --resume
        r = CliRunner().invoke(train_app, base + ["--epochs", "2", "--resume", "--out", str(out)])
        assert r.exit_code == 0, r.output
        assert (config(out)["init"], config(out)["augment_strength"], config(out)["lr"]) == (init, strength, lr)
        assert "bundled" not in r.output
        assert load_checkpoint(out / "last.pt").epoch == 2  # it did go on


def test_matae_from_the_bundle_trains_undistilled_with_valve_dropout_and_resumes_as_it_started(bundled_with_weights,
                                                                                          synth_dir, tmp_path):
    from typer.testing import CliRunner

    from echoseg.train.cli import train_app

    base = ["--data", str(synth_dir), "--model", "matae-unet", "--width", "8", "--batch-size", "8",
            "--max-train-frames", "16", "--device", "cpu"]
    auto, half = tmp_path / "auto", tmp_path / "half"
    r = CliRunner().invoke(train_app, base + ["--epochs", "1", "--out", str(auto)])
    assert r.exit_code == 0, r.output
    said = " ".join(r.output.split())  # the console wraps long lines
    assert "--distill 0" in said and "heavy augmentation, as it was trained, with valve-plane dropout" in said
    assert "masks that move with the frame (--shift-consistency 0 for off)" in said
    r = CliRunner().invoke(train_app, base + ["--epochs", "1", "--distill", "0.5", "--shift-consistency", "0",
                                              "--out", str(half)])
    assert r.exit_code == 0, r.output
    assert "shift-consistency" not in " ".join(r.output.split())
    for out, share, moves in ((auto, 0.0, 1.0), (half, 0.5, 0.0)):
        cfg = json.loads((out / "train_config.json").read_text())
        assert (cfg["distill"], cfg["augment_strength"], cfg["shift_consistency"]) == (share, "heavy-valve", moves)
        r = CliRunner().invoke(train_app, base + ["--epochs", "2", "--resume", "--out", str(out)])
        assert r.exit_code == 0, r.output
        cfg = json.loads((out / "train_config.json").read_text())
        assert (cfg["distill"], cfg["augment_strength"], cfg["shift_consistency"]) == \
            (share, "heavy-valve", moves)  # as it started
        assert load_checkpoint(out / "last.pt").epoch == 2


def test_a_resumed_sweep_or_run_reads_the_options_it_was_started_with(tmp_path):
    from echoseg.train.cli import _started_with

    assert _started_with(str(tmp_path), cv=True) is None and _started_with(str(tmp_path), cv=False) is None
    (tmp_path / "cv.json").write_text(json.dumps({"config": {"model": "unet", "init": ""}}))
    (tmp_path / "train_config.json").write_text(json.dumps({"model": "unet", "init": "pretrained"}))
    assert _started_with(str(tmp_path), cv=True)["init"] == ""  # a sweep from before the default: from scratch
    assert _started_with(str(tmp_path), cv=False)["init"] == "pretrained"
    (tmp_path / "cv.json").write_text("{not json")
    assert _started_with(str(tmp_path), cv=True) is None
