"""``python -m echoseg.pretrained.bundle EXPORT_DIR``: put an export's FP16 graphs into the package.

The last step of ``make pretrained``. Only the FP16 graphs travel (a few MB: the wheel stays
small; on a CPU ONNX Runtime computes them in FP32 with FP16-rounded weights, which the export's
parity gate measured), with the export's manifest narrowed to the files that are there, its
parity record, and MODEL_CARD.md (kept if the folder already has one).
"""

from __future__ import annotations

import sys
from pathlib import Path

from echoseg import artifacts
from echoseg.atomic import copy_file, write_json

from . import FOLDER

SHIPPED_PRECISION = "fp16"


def bundle(export_dir: str | Path, dest: Path = FOLDER) -> list[Path]:
    src = Path(export_dir)
    man = artifacts.read_manifest(src)
    if not man.get("passed"):
        raise SystemExit(f"{src}: the export did not pass its parity gates; nothing bundled")
    graphs = [f.path for f in artifacts.index_export_dir(src).files
              if f.kind == "onnx" and f.precision == SHIPPED_PRECISION]
    if not any(artifacts.granularity_from_name(p) == 1.0 for p in graphs):
        raise SystemExit(f"{src}: no full-width {SHIPPED_PRECISION} graph; export with echo-export build --fp16")
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("model*.onnx"):
        old.unlink()
    written = [copy_file(p, dest / p.name) for p in graphs]
    if (src / artifacts.PARITY).is_file():
        written.append(copy_file(src / artifacts.PARITY, dest / artifacts.PARITY))
    kept = {p.name for p in written}
    man["files"] = [e for e in man["files"] if e["file"] in kept]
    man["bundled_from"] = str(src)
    written.append(write_json(dest / artifacts.MANIFEST, man))
    return written


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m echoseg.pretrained.bundle EXPORT_DIR", file=sys.stderr)
        return 2
    for p in bundle(args[0]):
        print(f"bundled {p} ({p.stat().st_size / 2**20:.1f} MB)")
    if not (FOLDER / "MODEL_CARD.md").is_file():
        print(f"note: write {FOLDER / 'MODEL_CARD.md'} (data, recipe, measured real-echo Dice, limits)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
