"""What scoring needs of a model, whatever it is (a checkpoint in PyTorch or an exported graph).

Its own module so that the checkpoint scorer (eval.py) and the artifact scorer (eval_artifact.py)
both import it downward.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np


@dataclass
class Scorer:
    """What scoring needs of a model, whatever it is: a checkpoint in PyTorch or an exported graph.

    ``with scorer:`` closes what it holds (the runtime sessions of an exported graph) on every path."""

    model: str
    width: int
    source: str  # the checkpoint or artifact scored
    input_size: tuple[int, int]
    granularities: tuple[float, ...]
    predict: Callable[[np.ndarray, float], np.ndarray]  # uint8 N,H,W,3 frames, g -> bool masks N,H,W
    gmacs: Callable[[float], float]
    default_out: Path
    ran: dict[str, str] = field(default_factory=dict)  # exported graphs: g -> "backend precision file"
    close: Callable[[], None] = lambda: None  # frees what predict runs on (an exported graph's sessions); idempotent

    def __enter__(self) -> "Scorer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
