"""The model that ships inside the package, trained on echoseg's synthetic echo alone.

Real echo datasets come under data-use agreements that forbid redistribution, so nothing
trained on them may ship; a model trained only on ``echo-synth`` data has no such limit.
``make pretrained`` rebuilds it from scratch; its MODEL_CARD.md says how it was made, what it
scores on real echo, and what it is not (a diagnostic device). ``--model pretrained`` selects
it explicitly, and echo-run, echo-bench and echo-eval fall back to it when no model is given
and none is found under exports/ or runs/.
"""

from __future__ import annotations

from pathlib import Path

#: What a user types to ask for it: ``--model pretrained``.
NAME = "pretrained"
#: The export folder inside the package.
FOLDER = Path(__file__).with_name("echo-synth-matae-w16")


def bundled_dir() -> Path | None:
    """The bundled export folder, or None when this install has none (a source tree before
    ``make pretrained``)."""
    return FOLDER if any(FOLDER.glob("model*.onnx")) else None


def is_name(model) -> bool:
    return model is not None and str(model) == NAME


def describe() -> str:
    return (f"the bundled model ({FOLDER.name}: {_networks()} trained on synthetic echo only; "
            f"see {FOLDER / 'MODEL_CARD.md'})")


def _networks() -> str:
    """'matae-unet width 16', or 'an ensemble of 3 matae-unet width 16' as its manifest says."""
    from echoseg.artifacts import read_manifest

    try:
        m = read_manifest(FOLDER)["model"]
        what = f"{m['name']} width {m['width']}"
        k = int(m.get("members", 1))
    except (ValueError, KeyError, TypeError):  # ArtifactError is a ValueError
        return "matae-unet width 16"
    return f"an ensemble of {k} {what}" if k > 1 else what
