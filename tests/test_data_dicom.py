"""Multi-frame ultrasound DICOM as video input: frames, timing tags, spacing, bad files, echo-run in cm^2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom", minversion="3.0")

from echoseg.data.synthetic import make_video  # noqa: E402
from echoseg.data.video import VideoError, iter_frames, probe, read_frames, write_video  # noqa: E402


def write_dicom(path: Path, frames: np.ndarray, colour: bool = False, pixel_data: bool = True,
                transfer_syntax: str | None = None, **tags) -> Path:
    """An uncompressed multi-frame DICOM (Ultrasound Multi-frame Image Storage) of uint8 BGR frames."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.3.1")
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = UID(transfer_syntax) if transfer_syntax else ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "US"
    ds.NumberOfFrames = len(frames)
    ds.Rows, ds.Columns = frames.shape[1:3]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    if colour:
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
        data = frames[..., ::-1]  # BGR -> RGB
    else:
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        data = frames[..., 1]
    for k, v in tags.items():
        setattr(ds, k, v)
    if pixel_data:
        ds.PixelData = np.ascontiguousarray(data, dtype=np.uint8).tobytes()
    ds.save_as(path, enforce_file_format=True, implicit_vr=False, little_endian=True)
    return path


def us_region(dx_cm: float, dy_cm: float, w: int, h: int):
    from pydicom.dataset import Dataset

    r = Dataset()
    r.RegionSpatialFormat = 1
    r.RegionLocationMinX0, r.RegionLocationMinY0, r.RegionLocationMaxX1, r.RegionLocationMaxY1 = 0, 0, w - 1, h - 1
    r.PhysicalUnitsXDirection = r.PhysicalUnitsYDirection = 3
    r.PhysicalDeltaX, r.PhysicalDeltaY = dx_cm, dy_cm
    return r


@pytest.fixture(scope="module")
def synth():
    return make_video(3, frames=60)


def test_grey_cine_frames_timing_and_ultrasound_region_spacing(tmp_path, synth):
    path = write_dicom(tmp_path / "cine.dcm", synth.frames, FrameTime=20.0,
                       SequenceOfUltrasoundRegions=[us_region(0.04, 0.04, 112, 112)])
    info = probe(path)
    assert info.kind == "dicom" and info.fps == pytest.approx(50.0) and info.fps_source == "FrameTime"
    assert info.spacing_cm == pytest.approx((0.04, 0.04)) and (info.width, info.height, info.frame_count) == (112, 112, 60)
    frames = list(iter_frames(path))
    assert len(frames) == 60 and frames[0].shape == (112, 112, 3) and frames[0].dtype == np.uint8
    np.testing.assert_array_equal(frames[7][..., 0], synth.frames[7][..., 1])
    picked = read_frames(path, [5, 59, 80])
    assert sorted(picked) == [5, 59] and np.array_equal(picked[59], frames[59])


@pytest.mark.parametrize("tags,fps,source", [
    ({"FrameTimeVector": [0.0, 40.0, 40.0, 40.0]}, 25.0, "FrameTimeVector"),
    ({"CineRate": 30}, 30.0, "CineRate"),
    ({"RecommendedDisplayFrameRate": 60}, 60.0, "RecommendedDisplayFrameRate"),
    ({}, 0.0, "none"),
])
def test_frame_rate_tags(tmp_path, tags, fps, source):
    frames = np.full((4, 16, 16, 3), 90, np.uint8)
    info = probe(write_dicom(tmp_path / "t.dcm", frames, **tags))
    assert info.fps == pytest.approx(fps) and info.fps_source == source


def test_colour_cine_and_pixel_spacing_in_mm(tmp_path, synth):
    path = write_dicom(tmp_path / "rgb.dcm", synth.frames[:6], colour=True, PixelSpacing=[0.3, 0.5])
    info = probe(path)
    assert info.spacing_cm == pytest.approx((0.05, 0.03))  # (x = column spacing, y = row spacing) in cm
    np.testing.assert_array_equal(next(iter(iter_frames(path))), synth.frames[0])  # back in BGR order


def test_missing_pixel_data_or_unsupported_syntax_is_one_line(tmp_path):
    frames = np.zeros((3, 8, 8, 3), np.uint8)
    with pytest.raises(VideoError, match=r"no pixel data \(7FE0,0010\)"):
        probe(write_dicom(tmp_path / "nopix.dcm", frames, pixel_data=False))
    with pytest.raises(VideoError, match="transfer syntax 1.2.3.4.5 .*not supported"):
        probe(write_dicom(tmp_path / "odd.dcm", frames, transfer_syntax="1.2.3.4.5"))
    (tmp_path / "junk.dcm").write_bytes(b"\0" * 300)
    with pytest.raises(VideoError, match="not a readable DICOM"):
        probe(tmp_path / "junk.dcm")
    for p in ("nopix.dcm", "odd.dcm", "junk.dcm"):
        with pytest.raises(VideoError) as exc:
            list(iter_frames(tmp_path / p))
        assert "\n" not in str(exc.value)


def test_echo_run_reports_areas_in_cm2_and_volumes_in_ml(tmp_path, synth):
    from echoseg.runtime.api import run_videos
    from test_runtime_stream import OracleSession

    dx = 0.05
    (tmp_path / "in").mkdir()
    dcm = write_dicom(tmp_path / "in" / "cine.dcm", synth.frames, FrameTime=20.0,
                      SequenceOfUltrasoundRegions=[us_region(dx, dx, 112, 112)])
    bad = write_dicom(tmp_path / "in" / "empty.dcm", synth.frames[:2], pixel_data=False)
    avi = write_video(tmp_path / "in" / "plain.avi", synth.frames, 50)
    results = {Path(r.input).name: r for r in run_videos([dcm, bad, avi], out=tmp_path / "out", video=False,
                                                         session=OracleSession(synth.masks))}
    assert not results["empty.dcm"].ok and "no pixel data" in results["empty.dcm"].error
    assert results["plain.avi"].ok and results["plain.avi"].summary["pixel_spacing_cm"] is None
    r = results["cine.dcm"]
    assert r.ok, r.error
    s = json.loads((Path(r.out_dir) / "summary.json").read_text())
    assert s["pixel_spacing_cm"] == {"x": dx, "y": dx} and s["fps"] == pytest.approx(50.0) and not s["fps_assumed"]
    assert s["fps_source"] == "FrameTime" and s["beats"]
    b = s["beats"][0]
    assert b["ed_area_cm2"] == pytest.approx(b["ed_area_px"] * dx * dx)
    assert b["edv_ml"] == pytest.approx(b["edv_px3"] * dx ** 3)  # method of discs, px^3 -> mL
    assert 1 < b["ed_area_cm2"] < 60 and b["esv_ml"] < b["edv_ml"]
    assert s["volume_unit"] == "mL" and s["edv_ml"] == pytest.approx(b["edv_ml"])
    assert results["plain.avi"].summary["volume_unit"].startswith("px^3") and "edv_ml" not in results["plain.avi"].summary
    rows = (Path(r.out_dir) / "frames.csv").read_text().splitlines()
    assert rows[0].endswith("lv_area_cm2,lv_length_cm,lv_volume_ml")
    first = rows[1].split(",")
    assert float(first[8]) == pytest.approx(int(first[2]) * dx * dx, abs=1e-3)
    assert float(first[10]) == pytest.approx(float(first[4]) * dx ** 3, rel=1e-3)
    assert int(first[2]) == int(synth.masks[0].sum())


def test_echo_run_cli_on_a_dicom_cine(tmp_path, synth, unet_ckpt):
    from typer.testing import CliRunner

    from echoseg.runtime.cli import app

    dcm = write_dicom(tmp_path / "cine.dcm", synth.frames, FrameTime=20.0,
                      SequenceOfUltrasoundRegions=[us_region(0.05, 0.05, 112, 112)])
    for flag in ("--clean-masks", "--no-clean-masks"):
        out = tmp_path / flag.strip("-")
        r = CliRunner().invoke(app, [str(dcm), "--model", str(unet_ckpt), "--backend", "torch", "--no-video",
                                     "--out", str(out), flag])
        assert r.exit_code == 0, r.output
        s = json.loads((out / "cine" / "summary.json").read_text())
        assert s["pixel_spacing_cm"] == {"x": 0.05, "y": 0.05} and s["clean_masks"] == (flag == "--clean-masks")
        header = (out / "cine" / "frames.csv").read_text().splitlines()[0]
        assert header.endswith("lv_area_cm2,lv_length_cm,lv_volume_ml")


def _j2k_garbage(path: Path, frames: np.ndarray) -> Path:
    """A JPEG 2000 DICOM whose codestreams are garbage: pydicom's plugins fail on every frame."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import UID

    write_dicom(path, frames)
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.4.90")
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + b"garbage" * 20 for _ in range(len(frames))])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return path


def test_an_undecodable_jpeg2000_is_one_line_without_library_logging(tmp_path, capfd, caplog):
    import logging

    p = _j2k_garbage(tmp_path / "j2k.dcm", np.zeros((3, 16, 16, 3), np.uint8))
    pytest.importorskip("PIL")
    logging.basicConfig()  # what a CLI does: library records would reach the terminal
    with caplog.at_level(logging.DEBUG), pytest.raises(VideoError) as exc:
        list(iter_frames(p))
    msg = str(exc.value)
    assert "\n" not in msg and "cannot be decoded" in msg and str(p) in msg and "BytesIO" not in msg
    assert not [r for r in caplog.records if r.name.startswith("pydicom")]
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err


@pytest.mark.parametrize("said", [10, 2])
def test_number_of_frames_that_disagrees_with_the_pixel_data_warns_and_uses_what_is_there(tmp_path, synth, said,
                                                                                             caplog):
    import logging

    frames = synth.frames[:4]
    p = write_dicom(tmp_path / "cine.dcm", frames, NumberOfFrames=said)
    with caplog.at_level(logging.WARNING, logger="echoseg.data.dicom"):
        info = probe(p)
        got = list(iter_frames(p))
    assert info.frame_count == 4 and len(got) == 4
    assert np.array_equal(got[3][..., 1], frames[3][..., 1])
    lines = [r.getMessage() for r in caplog.records if "NumberOfFrames" in r.getMessage()]
    assert lines == [f"{p}: NumberOfFrames says {said} but the pixel data holds 4 frame(s); using the 4 present"]
    assert read_frames(p, [3])[3].shape == frames[3].shape


def test_pixel_data_short_of_one_frame_is_a_clear_error(tmp_path):
    frames = np.zeros((1, 64, 64, 3), np.uint8)
    p = write_dicom(tmp_path / "cut.dcm", frames)
    ds = pydicom.dcmread(p)
    ds.PixelData = b"\0" * 1000  # less than 64 x 64
    ds.save_as(p, enforce_file_format=True)
    with pytest.raises(VideoError) as exc:
        probe(p)
    assert "less than one 64x64 frame" in str(exc.value) and "reshape" not in str(exc.value)


def test_a_folder_s_dicom_files_are_found_by_content(tmp_path, synth):
    from echoseg.runtime.api import expand_inputs

    d = tmp_path / "in"
    d.mkdir()
    write_dicom(d / "IM0001", synth.frames[:4])  # PACS exports often have no suffix
    write_dicom(d / "b.dcm", synth.frames[:4])
    (d / "notes.txt").write_text("not a video")
    videos, failed, _ = expand_inputs([d])
    assert [p.name for p in videos] == ["IM0001", "b.dcm"] and failed == []
    assert probe(d / "IM0001").kind == "dicom"


def test_ybr_full_422_frames_are_counted_at_two_samples_a_pixel(tmp_path):
    from echoseg.data.dicom import _frames_held

    p = write_dicom(tmp_path / "ybr.dcm", np.zeros((3, 16, 16, 3), np.uint8), colour=True)
    ds = pydicom.dcmread(p)
    ds.PhotometricInterpretation = "YBR_FULL_422"
    ds.PixelData = b"\0" * (3 * 16 * 16 * 2)
    ds.save_as(p, enforce_file_format=True)
    assert _frames_held(p, pydicom.dcmread(p, defer_size="1 KB"), 3) == 3
