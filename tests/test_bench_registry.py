"""echo-bench reads the backend registry: its lists, its plan and its worker follow the records, not hand lists."""

from __future__ import annotations

import ast
import json
from dataclasses import replace
from pathlib import Path

import pytest

from echoseg.artifacts import read_onnx_meta
from echoseg.backends import registry
from echoseg.backends.registry import Backend
from echoseg.backends.session import SessionInfo
from echoseg.bench import cli, targets, worker
from echoseg.bench.targets import bench_order, bench_precisions, discover
from echoseg.bench.worker import WorkerConfig

BENCH = Path(__file__).resolve().parents[1] / "echoseg" / "bench"


@pytest.fixture
def bundle(tmp_path):
    """A copy of the shipped bundle (FP16 and INT8 graphs at granularities 1 and 0.5, no checkpoint)."""
    import shutil

    from echoseg import pretrained

    shipped = Path(pretrained.__file__).parent / pretrained.FOLDER.name  # conftest hides pretrained.FOLDER
    if not any(shipped.glob("model*.onnx")):
        pytest.skip("no bundled model in this tree (make pretrained)")
    return Path(shutil.copytree(shipped, tmp_path / "exports" / shipped.name))


class _Opened:
    """A session that only records how it was opened."""

    def __init__(self, path, **options):
        self.path, self.options = Path(path), options
        self.info = SessionInfo("fakert", "fp32", "cpu", 1, 0, read_onnx_meta(path), str(path))

    def run(self, batch):
        raise AssertionError("not run here")

    def close(self):
        pass


@pytest.fixture
def fake(monkeypatch):
    """Register a backend of the test's own, for this test only; returns a function that replaces it."""
    registry.all_backends()  # the built-in ones first

    def put(**fields):
        rec = Backend(**{"name": "fakert", "artifact": "onnx", "rank": 12, "open": _Opened, **fields})
        monkeypatch.setitem(registry._REGISTRY, rec.name, rec)
        return rec

    return put


def test_the_built_in_lists_come_from_the_records():
    assert bench_order() == ("torch", "onnxruntime", "openvino", "tensorrt")  # auto's order reversed
    assert bench_precisions() == ("fp32", "bf16", "fp16", "int8")
    assert (cli._BACKENDS, cli._PRECISIONS) == ("torch,onnxruntime,openvino,tensorrt", "fp32,bf16,fp16,int8")
    for b in registry.all_backends():
        assert set(b.bench_options) <= set(b.options), b.name  # bench passes only what open() takes
        assert b.plan_check in ("file", "library", ""), b.name


def test_a_registered_backend_is_planned_with_its_record_s_precisions(fake, bundle):
    fake(bench_precisions=("fp16", "int8"), plan_check="")
    assert "fakert" in bench_order() and "fakert" in cli._known()[0]
    plan = discover([str(bundle)], bundle.parent, bundle.parent / "no-runs")
    got = sorted((t.granularity, t.precision, Path(t.artifact).name) for t in plan.targets if t.backend == "fakert")
    assert got == [(0.5, "fp16", "model.g0.5.fp16.onnx"), (0.5, "int8", "model.g0.5.int8.onnx"),
                   (1.0, "fp16", "model.fp16.onnx"), (1.0, "int8", "model.int8.onnx")]
    only = discover([str(bundle)], bundle.parent, bundle.parent / "no-runs", backends=("fakert",), precisions=("fp32",))
    assert only.targets == [] and only.skipped == []  # no fp32 file and no `missing` reason: nothing to say


def test_a_record_s_own_precision_runs_from_another_file_or_says_why_not(fake, bundle):
    fake(bench_precisions=("int8", "int4", "fp16"), file_precision={"int4": "int8"}, plan_check="",
         unavailable=lambda p: "no int4 kernels on this CPU" if p == "int4" else None,
         missing="{dir} has no {prec} graph for fakert")
    assert bench_precisions() == ("fp32", "bf16", "fp16", "int8", "int4")
    plan = discover([str(bundle)], bundle.parent, bundle.parent / "no-runs", backends=("fakert",),
                    precisions=("int8", "int4", "fp32"), granularities=(1.0,))
    assert [(t.backend, t.precision, Path(t.artifact).name) for t in plan.targets] == [
        ("fakert", "int8", "model.int8.onnx")]
    assert sorted((s.precision, s.granularity, s.reason) for s in plan.skipped) == [
        ("fp32", None, f"{bundle} has no fp32 graph for fakert"),
        ("int4", 0.5, "no int4 kernels on this CPU"), ("int4", 1.0, "no int4 kernels on this CPU")]


def test_a_record_that_checks_each_file_skips_the_one_it_cannot_run(fake, bundle):
    fake(bench_precisions=("fp16", "int8"), label="Fake RT",
         problem=lambda p: "no INT8 kernels" if "int8" in p.name else None)
    plan = discover([str(bundle)], bundle.parent, bundle.parent / "no-runs", backends=("fakert",),
                    granularities=(1.0,))
    assert [(t.precision, Path(t.artifact).name) for t in plan.targets] == [("fp16", "model.fp16.onnx")]
    assert [(s.backend, s.precision, s.reason) for s in plan.skipped if s.granularity == 1.0] == [
        ("fakert", "int8", "Fake RT cannot run model.int8.onnx here: no INT8 kernels")]


def test_the_worker_opens_with_the_options_its_record_names(fake, bundle):
    fake(options=("threads", "precision", "device"), bench_options=("threads", "precision"))
    cfg = WorkerConfig(artifact=str(bundle / "model.int8.onnx"), backend="fakert", videos=[], precision="int8",
                       threads=2, device="cuda", granularity=0.5)
    assert worker._open(cfg).options == {"threads": 2, "precision": "int8"}
    assert worker._open(replace(cfg, threads=0)).options == {"precision": "int8"}  # 0: the library's default


def test_the_worker_uses_the_record_s_library_threads_and_sync(fake, bundle, monkeypatch):
    calls = []
    fake(library="json", set_threads=calls.append, sync=lambda s: "waits")
    cfg = WorkerConfig(artifact=str(bundle / "model.int8.onnx"), backend="fakert", videos=[], mode="reference",
                       granularities=[1.0], threads=3)
    monkeypatch.setattr(worker, "_reference", lambda cfg, row, sessions: row)
    assert set(worker.run(cfg)) == {"import_s"} and calls == [3]
    assert worker._sync_for(_Opened(bundle / "model.int8.onnx")) == "waits"
    assert worker._macs(cfg) is None  # MACs come from a checkpoint backend only


def test_bench_has_no_backend_name_branches():
    """targets, worker, cli, table1 and compare name no built-in backend: what differs lives on the records
    (report.py still styles rows by name: the plot's line styles and ONNX Runtime's FP16 upcast note)."""
    names = set(registry.names())
    found = []
    for f in ("targets.py", "worker.py", "cli.py", "table1.py", "compare.py"):
        for node in ast.walk(ast.parse((BENCH / f).read_text())):
            if isinstance(node, ast.Constant) and node.value in names:
                found.append(f"{f}:{node.lineno} {node.value!r}")
    assert found == []


def test_a_worker_config_that_is_not_json_is_one_line(capsys):
    assert worker.main(["--config", "{not json"]) == 2
    out = json.loads(capsys.readouterr().out)
    assert out["error"].startswith("worker config: not JSON (")


def test_the_worker_s_one_line_errors_are_the_root_imports_and_files():
    from echoseg.errors import EchosegError

    assert worker._known_errors() == (EchosegError, ImportError, OSError)
    assert cli._errors() == (EchosegError, OSError)
    assert issubclass(worker.WorkerConfigError, ValueError)  # except ValueError still catches it
    assert targets.has_module("json") and not targets.has_module("no_such_module_here")
