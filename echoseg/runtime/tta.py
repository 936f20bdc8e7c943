"""Test-time augmentation: the model run on shifted copies of each frame, its probabilities shifted
back and averaged (numpy only: the runtime's, echo-eval's and echo-run's one implementation).

``shift3`` runs three views: the frame as it is, moved 4 pixels right and down, and 4 pixels left
and up (at the 112-pixel input; scaled with the input's size). Each view's output is turned into a
probability, moved back onto the frame's grid (the pixels that slid out are taken from the nearest
edge), and the three are averaged; the mask is that mean above the model's threshold. It costs
three times the inference. Measured on matae-unet's leave-one-patient-out runs (docs/real-echo.md): it lifts
g=1/2 mostly on the one patient whose LV the plain model half-misses, and leaves the rest level.

The shifted-in border is filled with black (0 before normalising, what an empty part of an echo
frame is), so a view is exactly the frame moved on a black canvas.
"""

from __future__ import annotations

import numpy as np

from echoseg.errors import EchosegError

#: name -> (dy, dx) shifts in pixels of a 112-pixel input; the first view is always the frame itself.
VIEWS: dict[str, tuple[tuple[int, int], ...]] = {
    "none": ((0, 0),),
    "shift3": ((0, 0), (4, 4), (-4, -4)),
}
#: The input size VIEWS' pixels are given at.
VIEW_SIZE = 112


class TtaError(EchosegError, ValueError):
    """An unknown --tta name."""


def check_tta(name: str) -> str:
    """``name`` if it is a known view set, else a one-line TtaError naming the choices."""
    if name not in VIEWS:
        raise TtaError(f"--tta {name!r}: use one of {', '.join(VIEWS)}")
    return name


def view_shifts(name: str, height: int, width: int) -> list[tuple[int, int]]:
    """The (dy, dx) pixel shifts of view set ``name`` at an input of height x width."""
    out = []
    for dy, dx in VIEWS[check_tta(name)]:
        out.append((int(round(dy * height / VIEW_SIZE)), int(round(dx * width / VIEW_SIZE))))
    return out


def shifted(x: np.ndarray, dy: int, dx: int, fill) -> np.ndarray:
    """N,C,H,W moved by (dy, dx) pixels (content goes down/right for positive shifts); what moves
    in is ``fill`` (a scalar, or one value per channel)."""
    if dy == 0 and dx == 0:
        return x
    n, c, h, w = x.shape
    out = np.empty_like(x)
    out[...] = np.asarray(fill, x.dtype).reshape(1, -1, 1, 1) if np.ndim(fill) else fill
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[:, :, yd, xd] = x[:, :, ys, xs]
    return out


def shifted_back(p: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """N,1,H,W output of a view moved by (dy, dx), moved back by (-dy, -dx); the rows and columns
    that have no counterpart repeat the nearest edge."""
    if dy == 0 and dx == 0:
        return p
    h, w = p.shape[-2:]
    rows = np.clip(np.arange(h) + dy, 0, h - 1)
    cols = np.clip(np.arange(w) + dx, 0, w - 1)
    return p[..., rows[:, None], cols[None, :]]


def _probability(y: np.ndarray, output: str) -> np.ndarray:
    y = np.asarray(y, np.float32)
    if output != "logits":
        return y
    return 1.0 / (1.0 + np.exp(-np.clip(y, -60.0, 60.0)))


def _as_output(p: np.ndarray, output: str) -> np.ndarray:
    if output != "logits":
        return p.astype(np.float32)
    q = np.clip(p.astype(np.float64), 1e-12, 1 - 1e-12)
    return (np.log(q) - np.log1p(-q)).astype(np.float32)


def average_views(run, x: np.ndarray, name: str, fill, output: str = "logits") -> np.ndarray:
    """``run`` (float32 N,C,H,W -> N,1,H,W) on every view of normalised frames ``x``, averaged as
    probabilities on the frames' grid; returned in ``run``'s own kind (``output``: logits, so the
    same cut applies, or probabilities). ``fill``: the normalised value of a black pixel."""
    shifts = view_shifts(name, x.shape[2], x.shape[3])
    if len(shifts) == 1:
        return np.asarray(run(x), np.float32)
    acc = None
    for dy, dx in shifts:
        p = shifted_back(_probability(run(shifted(x, dy, dx, fill)), output), dy, dx)
        acc = p if acc is None else acc + p
    return _as_output(acc / len(shifts), output)


def black(mean, std) -> np.ndarray:
    """The normalised value of a black pixel, per channel: (0 - mean) / std."""
    return (-np.asarray(mean, np.float32) / np.asarray(std, np.float32)).astype(np.float32)


class ViewAveraging:
    """A Session whose ``run`` averages the wrapped session's output over the views of ``name``.

    ``info`` is the wrapped session's; ``close`` closes it (a caller that keeps the wrapped session
    closes that one instead)."""

    def __init__(self, session, name: str) -> None:
        self.inner = session
        self.tta = check_tta(name)
        self.info = session.info
        spec = session.info.meta.input_spec
        self._fill = black(spec.mean, spec.std)
        self._output = session.info.meta.output

    def run(self, batch: np.ndarray) -> np.ndarray:
        return average_views(self.inner.run, np.asarray(batch, np.float32), self.tta, self._fill, self._output)

    def close(self) -> None:
        self.inner.close()


def with_tta(session, name: str):
    """``session`` itself for ``none``, else it wrapped in ViewAveraging."""
    return session if check_tta(name) == "none" else ViewAveraging(session, name)
