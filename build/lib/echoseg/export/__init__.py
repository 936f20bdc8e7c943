"""Deployment exports of trained checkpoints (`echo-export`).

onnx.py (torch -> ONNX with metadata), fp16.py (FP16 graph with FP32 I/O and its CPU emulation),
int8.py (static QDQ quantization), parity.py (the gate), tensorrt.py (engine plan/build/load),
manifest.py (manifest.json, engine sidecars), triton.py (model repository), build.py (one
checkpoint end to end), cli.py (the Typer app). Heavy libraries are imported inside functions.
"""
