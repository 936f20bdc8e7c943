"""Ensembles: runs of one model combined, probabilities averaged; exported, bundled and started from."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

torch = pytest.importorskip("torch")

from echoseg import pretrained  # noqa: E402
from echoseg.config import ModelConfig, TrainConfig  # noqa: E402
from echoseg.models import build_model, count_macs  # noqa: E402
from echoseg.models.checkpoint import CheckpointError, build_from_checkpoint, load_checkpoint  # noqa: E402
from echoseg.models.ensemble import EPS, Ensemble, combine, member_state  # noqa: E402


def _x(seed: int = 0, n: int = 3):
    return torch.randn(n, 3, 112, 112, generator=torch.Generator().manual_seed(seed))


def _members(*paths):
    return [build_from_checkpoint(load_checkpoint(p)) for p in paths]


@pytest.fixture(scope="module")
def ens_ckpt(matae_ckpt, matae_ckpt_b, tmp_path_factory):
    return combine([matae_ckpt, matae_ckpt_b], tmp_path_factory.mktemp("ens") / "ens2")


def test_the_ensemble_is_the_logit_of_its_members_mean_probability(matae_ckpt, matae_ckpt_b, ens_ckpt):
    a, b = _members(matae_ckpt, matae_ckpt_b)
    ens = build_from_checkpoint(load_checkpoint(ens_ckpt))
    x = _x()
    with torch.no_grad():
        for g in (1.0, 0.5):
            la, lb, le = a(x, g), b(x, g), ens(x, g)
            p = (torch.sigmoid(la) + torch.sigmoid(lb)) / 2
            assert torch.allclose(torch.sigmoid(le), p.clamp(EPS, 1 - EPS), atol=1e-6), g
            assert not torch.allclose(la, lb, atol=1e-2)  # two different networks, so the mean means something
            # where the members disagree the ensemble's mask is not either member's
            assert ((le > 0) != (la > 0)).any() or ((le > 0) != (lb > 0)).any()
            assert torch.allclose(ens.sliced(g)(x), le, atol=1e-5), g  # each member's stand-alone g network
        big = torch.full((1, 3, 112, 112), 1e4)  # saturated members: the logit stays finite (FP16-safe)
        assert torch.isfinite(ens(big)).all() and ens(big).abs().max() <= float(np.log((1 - EPS) / EPS)) + 1e-3


def test_each_member_sees_the_frames_normalised_as_it_was_trained(matae_ckpt, matae_ckpt_b, tmp_path):
    from dataclasses import replace

    from echoseg.models.checkpoint import save_checkpoint

    a, b = load_checkpoint(matae_ckpt), load_checkpoint(matae_ckpt_b)
    spec_b = replace(b.input_spec, mean=tuple(m + 20.0 for m in b.input_spec.mean),
                     std=tuple(s * 1.5 for s in b.input_spec.std))  # as if trained on darker, wider-spread data
    other = save_checkpoint(tmp_path / "b2" / "best.pt", build_from_checkpoint(b), b.model, spec_b)
    ens = build_from_checkpoint(load_checkpoint(combine([matae_ckpt, other], tmp_path / "e")))
    pixels = torch.rand(2, 3, 112, 112, generator=torch.Generator().manual_seed(5)) * 255

    def norm(spec):
        return (pixels - torch.tensor(spec.mean).view(1, -1, 1, 1)) / torch.tensor(spec.std).view(1, -1, 1, 1)

    ma, mb = _members(matae_ckpt, matae_ckpt_b)
    with torch.no_grad():
        want = (torch.sigmoid(ma(norm(a.input_spec))) + torch.sigmoid(mb(norm(spec_b)))) / 2
        got = torch.sigmoid(ens(norm(a.input_spec)))  # the ensemble's input spec is its first member's
        naive = (torch.sigmoid(ma(norm(a.input_spec))) + torch.sigmoid(mb(norm(a.input_spec)))) / 2
    assert torch.allclose(got, want.clamp(EPS, 1 - EPS), atol=1e-5)
    assert not torch.allclose(got, naive.clamp(EPS, 1 - EPS), atol=1e-3)  # so the adapter did something


def test_the_checkpoint_records_its_members_and_counts_their_work(matae_ckpt, matae_ckpt_b, ens_ckpt):
    from echoseg.artifacts import file_sha256

    ck = load_checkpoint(ens_ckpt)
    assert ens_ckpt.name == "best.pt" and ck.model.members == 2
    assert [m["sha256"] for m in ck.ensemble_of] == [file_sha256(matae_ckpt), file_sha256(matae_ckpt_b)]
    single = build_from_checkpoint(load_checkpoint(matae_ckpt))
    ens = build_from_checkpoint(ck)
    assert isinstance(ens, Ensemble) and ens.granularities == single.granularities
    for g in (1.0, 0.5):  # twice one member's multiply-accumulates; the reconstruction heads not counted
        assert count_macs(ens, g) == 2 * count_macs(single, g)
    a = member_state(ck.state_dict, 1)
    b = load_checkpoint(matae_ckpt_b).state_dict
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in b)


def test_model_config_says_members_only_for_an_ensemble():
    assert "members" not in ModelConfig(name="matae-unet", width=8).to_dict()  # plain exports read as before
    d = ModelConfig(name="matae-unet", width=8, members=3).to_dict()
    assert d["members"] == 3 and ModelConfig.from_dict(d).members == 3
    assert isinstance(build_model(ModelConfig.from_dict(d)), Ensemble)


def test_combine_refuses_what_cannot_be_averaged_in_one_line(matae_ckpt, unet_ckpt, ens_ckpt, tmp_path):
    from dataclasses import replace

    from echoseg.models.checkpoint import save_checkpoint

    a = load_checkpoint(matae_ckpt)
    small = save_checkpoint(tmp_path / "s" / "best.pt", build_from_checkpoint(a), a.model,
                            replace(a.input_spec, height=96, width=96))
    cases = [([matae_ckpt], "at least two runs"),
             ([matae_ckpt, unet_ckpt], f"{unet_ckpt}: its model"),
             ([matae_ckpt, small], f"{small}: its input size"),
             ([matae_ckpt, ens_ckpt], "already an ensemble of 2; name its member runs instead"),
             ([matae_ckpt, tmp_path / "nope"], "no such checkpoint")]
    for runs, want in cases:
        with pytest.raises(CheckpointError) as e:
            combine(runs, tmp_path / "out")
        assert want in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "out" / "best.pt").exists()


def test_echo_export_ensemble_cli(matae_ckpt, matae_ckpt_b, tmp_path):
    from echoseg.export.cli import app

    r = CliRunner().invoke(app, ["ensemble", str(matae_ckpt), str(matae_ckpt_b), "--out", str(tmp_path / "e")])
    assert r.exit_code == 0, r.output
    assert "an ensemble of 2" in r.output and load_checkpoint(tmp_path / "e").model.members == 2
    bad = CliRunner().invoke(app, ["ensemble", str(matae_ckpt), "--out", str(tmp_path / "f")])
    assert bad.exit_code == 2 and "at least two runs" in bad.output
    same = CliRunner().invoke(app, ["ensemble", str(matae_ckpt), str(matae_ckpt_b), "--out", str(matae_ckpt.parent)])
    assert same.exit_code == 2 and "is one of the runs" in same.output


@pytest.fixture(scope="module")
def ens_export(ens_ckpt, tmp_path_factory):
    from test_export_fixtures import quick_options

    from echoseg.export.build import export_checkpoint

    out = tmp_path_factory.mktemp("ens-exports")
    res = export_checkpoint(ens_ckpt, quick_options(out, fp16=True, int8=True, granularities=(0.5,)))
    assert res.ok, res.errors
    return res.dir


def test_an_ensemble_exports_as_one_graph_that_passes_its_gates(ens_export, ens_ckpt):
    from test_export_fixtures import onnx_logits

    man = json.loads((ens_export / "manifest.json").read_text())
    assert man["passed"] and man["model"]["members"] == 2
    ens = build_from_checkpoint(load_checkpoint(ens_ckpt))
    x = _x(3, 4)
    for g, name in ((1.0, "model.onnx"), (0.5, "model.g0.5.onnx")):
        with torch.no_grad():
            want = ens(x, g).numpy()
        got = onnx_logits(ens_export / name, x.numpy())
        assert np.abs(got - want).max() < 1e-3, g
    assert (ens_export / "model.int8.onnx").is_file() and (ens_export / "model.g0.5.fp16.onnx").is_file()


def test_the_runtime_scores_the_exported_ensemble_as_pytorch_does(ens_export, ens_ckpt, synth_dir, tmp_path):
    from echoseg.train.eval import evaluate

    torch_m = evaluate(ens_ckpt, synth_dir, "test", tmp_path / "pt", "cpu")
    onnx_m = evaluate(ens_export, synth_dir, "test", tmp_path / "ort", backend="onnxruntime")
    assert onnx_m["frames"] == torch_m["frames"] > 0
    assert abs(onnx_m["dice"] - torch_m["dice"]) < 0.005


def test_init_from_an_ensemble_starts_from_its_first_member(matae_ckpt, ens_ckpt, caplog):
    from echoseg.train.init import initial_model
    from echoseg.train.loop import model_config

    cfg = TrainConfig(model="matae-unet", width=8, init=str(ens_ckpt))
    with caplog.at_level("WARNING"):
        mcfg, _, model = initial_model(cfg, model_config(cfg))
    assert mcfg.members == 1 and not isinstance(model, Ensemble)
    assert "an ensemble of 2 networks; starting from its first member" in caplog.text
    ref = build_from_checkpoint(load_checkpoint(matae_ckpt))
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(_x(), 1.0), ref(_x(), 1.0))


def test_bundling_an_ensemble_ships_its_first_member_as_weights_and_says_so(ens_export, ens_ckpt, matae_ckpt,
                                                                           matae_ckpt_b, tmp_path, monkeypatch):
    from echoseg.pretrained import bundle as b
    from echoseg.pretrained.weights import read_weights

    dest = tmp_path / "pkg" / "echo-synth-matae-w16"
    monkeypatch.setattr(pretrained, "FOLDER", dest)
    monkeypatch.setattr(b, "FOLDER", dest)
    monkeypatch.setattr(b, "REAL_ECHO", tmp_path / "none.md")
    assert b.main([str(ens_export), "--run", str(ens_ckpt), "--style", "echo3"]) == 0
    state, meta = read_weights(dest / "weights.npz")
    assert meta["members"] == 2 and meta["member"] == 0 and "members" not in meta["model"]
    first = load_checkpoint(matae_ckpt).state_dict
    assert set(state) == set(first)  # one network's tensors: the package carries one set of training weights
    card = (dest / "MODEL_CARD.md").read_text()
    assert "an ensemble of 2 matae-unet width 8 networks" in card and "--style echo3" in card
    assert "(echo-synth-matae-w16: an ensemble of 2 matae-unet width 8 trained on" in pretrained.describe()
    from echoseg.train.init import initial_model
    from echoseg.train.loop import model_config

    cfg = TrainConfig(model="matae-unet", width=8, init="pretrained")
    mcfg, _, model = initial_model(cfg, model_config(cfg))
    ref = build_from_checkpoint(load_checkpoint(matae_ckpt)).eval()
    model.eval()
    with torch.no_grad():  # the first member, FP16-rounded
        assert torch.allclose(model(_x(), 1.0), ref(_x(), 1.0), atol=0.05)


def test_an_ensembles_model_card_gives_every_members_seed():
    from echoseg.pretrained.bundle import model_card

    man = {"model": {"name": "matae-unet", "width": 16, "members": 3}, "input_spec": {"height": 112, "width": 112},
           "files": [{"file": "model.fp16.onnx"}]}
    tc = TrainConfig(model="matae-unet", width=16, seed=13, shift_consistency=1.0, data="/tmp/data-13").to_dict()
    card = model_card(man, tc, None, None, "echo3", seeds=[13, 14, 15])
    assert "an ensemble of 3 matae-unet width 16 networks" in card
    assert "| seed (data and training, one network each) | 13, 14, 15 |" in card
    assert "| shift_consistency | 1.0 |" in card and "/tmp/data-13" not in card  # one member's data path: not the recipe
    assert "`echo-synth --style echo3 --layout frames --every 6 --frames 48` at each seed" in card
    single = model_card({**man, "model": {"name": "matae-unet", "width": 16}}, tc, None, None, "echo3")
    assert "ensemble" not in single and "| seed | 13 |" in single


def _frames(root, split: str, videos: int, per: int = 2) -> None:
    d = root / split / "images"
    d.mkdir(parents=True)
    for v in range(videos):
        for f in range(per):
            (d / f"SYN013_{v:05d}_{f:04d}.png").write_bytes(b"")


def test_the_model_card_counts_the_videos_each_network_was_trained_on(tmp_path):
    from types import SimpleNamespace

    from echoseg.pretrained.bundle import _video_counts, model_card

    a, b = tmp_path / "data-13", tmp_path / "data-14"
    for root in (a, b):
        _frames(root, "train", 7)
        _frames(root, "val", 2)
        _frames(root, "test", 1)
    cfg = lambda data: SimpleNamespace(data=str(data))  # noqa: E731
    assert _video_counts([cfg(a)]) == {"train": 7, "val": 2, "test": 1}  # frames grouped by video, not counted
    assert _video_counts([cfg(tmp_path / "gone")]) is None
    assert _video_counts(None) is None  # a member checkpoint no longer readable
    counts = _video_counts([cfg(a), cfg(b)])
    assert counts == {"train": 7, "val": 2, "test": 1}
    _frames(b, "extra", 1)  # a folder that is not a split: not counted
    (b / "train" / "images" / ".DS_Store").write_bytes(b"")  # nor a file that is not an image
    assert _video_counts([cfg(a), cfg(b)]) == counts
    (b / "train" / "images" / "SYN013_00099_0000.png").write_bytes(b"")
    assert _video_counts([cfg(a), cfg(b)]) is None  # members drawn from different amounts of data: no single count

    man = {"model": {"name": "matae-unet", "width": 16, "members": 2}, "input_spec": {"height": 112, "width": 112},
           "files": [{"file": "model.fp16.onnx"}]}
    tc = TrainConfig(model="matae-unet", width=16, seed=13).to_dict()
    assert "| videos per network (train/val/test) | 10 (7/2/1) |" in model_card(man, tc, None, None, "echo3",
                                                                                 [13, 14], counts)
    assert "| videos" not in model_card(man, tc, None, None, "echo3", [13, 14], None)


def test_a_frame_folder_counts_its_videos_in_either_layout(tmp_path):
    from echoseg.data.frames import split_names, videos_per_split

    _frames(tmp_path / "flat", "", 20)  # DIR/images/: the 80/10/10 split by video
    names = [f"SYN013_{v:05d}_{f:04d}" for v in range(20) for f in range(2)]
    want = {s: len(split_names(names, s)) // 2 for s in ("train", "val", "test")}
    assert videos_per_split(tmp_path / "flat") == want and sum(want.values()) == 20
    assert videos_per_split(tmp_path / "nothing") == {}
