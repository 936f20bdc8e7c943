"""What echo-train checks before any data is loaded or any epoch is run (torch-free).

A trained run is never replaced by accident (``--resume`` continues it, ``--overwrite``
replaces it), and an output folder that cannot hold the run is found out now, not when
saving after a whole epoch.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from echoseg.atomic import NotWritableError, check_writable
from echoseg.errors import EchosegError

#: Files whose presence means ``--out`` already holds a trained run.
RUN_FILES = ("best.pt", "last.pt")
#: A run's peak disk use in multiples of the float32 weights: best.pt (1), last.pt with Adam's
#: two moments (3), and a new last.pt written beside the old one before the rename (3).
SPACE_FACTOR = 7
SPACE_MARGIN_BYTES = 8 << 20  # log.csv, curves.png, train_config.json and some slack


class PreflightError(EchosegError, RuntimeError):
    """echo-train would lose a trained run or cannot write its outputs."""


def check_run_dir(out: str | os.PathLike, resume: bool, overwrite: bool) -> None:
    """Refuse an existing run unless --resume or --overwrite says what to do with it."""
    out = Path(out)
    if resume and overwrite:
        raise PreflightError("--resume continues the run in --out and --overwrite replaces it; pass only one")
    found = [name for name in RUN_FILES if (out / name).exists()]
    if found and not (resume or overwrite):
        raise PreflightError(f"{out} already holds a trained run ({', '.join(found)}); pass --resume to continue it, "
                             "--overwrite to replace it, or a new --out")


def check_cv_dir(out: str | os.PathLike, resume: bool, overwrite: bool) -> None:
    """The same for a cross-validation folder (echo-train --folds): its runs are fold<i>-seed<s>/, its table
    cv.json; --resume keeps the scored runs and adds the missing ones (echoseg.train.cv)."""
    out = Path(out)
    if resume and overwrite:
        raise PreflightError("--resume adds the missing runs to the cross-validation in --out and --overwrite "
                             "starts it again; pass only one")
    runs = sorted(p.parent.name for p in out.glob("fold*-seed*/last.pt"))
    table = (out / "cv.json").exists()
    if (table or runs) and not (resume or overwrite):
        held = ", ".join((["cv.json"] if table else [])
                         + ([f"{len(runs)} fold run{'s' * (len(runs) > 1)}"] if runs else []))
        raise PreflightError(f"{out} already holds a cross-validation ({held}); pass --resume to keep its scored "
                             "runs and add the missing ones, --overwrite to start it again, or a new --out")
    if resume and not (table or runs):
        raise PreflightError(f"--resume: {out} holds no cross-validation (no cv.json, no fold run) to continue; "
                             "drop --resume")


def check_out_writable(out: str | os.PathLike, weight_bytes: int = 0) -> None:
    """Raise a one-line OSError when ``out`` cannot be created or written, or lacks the space for a run.

    Nothing is created: for a folder that does not exist yet, its nearest existing parent is tried.
    """
    out = Path(out)
    hint = "pass a writable --out (or free some space)"
    check_writable(out, hint, create=False)
    target = out
    while not target.exists() and target.parent != target:
        target = target.parent
    need = SPACE_FACTOR * int(weight_bytes) + SPACE_MARGIN_BYTES
    free = shutil.disk_usage(target).free
    if free < need:
        raise NotWritableError(f"{out}: {free / 2**20:.0f} MB free, a run of this model needs about "
                                  f"{need / 2**20:.0f} MB (checkpoints with optimizer state); {hint}", errno.ENOSPC)


def preflight(out: str | os.PathLike, resume: bool, overwrite: bool, weight_bytes: int = 0, cv: bool = False) -> None:
    """Both checks, in the order a user wants to hear about them (``cv``: ``out`` is a cross-validation folder)."""
    (check_cv_dir if cv else check_run_dir)(out, resume, overwrite)
    check_out_writable(out, weight_bytes)
