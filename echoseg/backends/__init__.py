"""Model runners on the ground floor: the session protocol, the backend registry, the one
choice of backend and file, and one module per backend (ort, openvino, tensorrt, torch).

Runtime, export, bench and train all open models through here. This package imports none of
them; only :mod:`echoseg.backends.torch` imports :mod:`echoseg.models` (lazily, inside its session).
Heavy libraries are imported inside the backend that needs them.
"""
