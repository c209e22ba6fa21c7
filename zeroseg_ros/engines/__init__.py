"""Exported image encoders that stand in for the PyTorch one: ONNX export, ONNX Runtime and TensorRT runners.
Built on ``core`` alone."""
