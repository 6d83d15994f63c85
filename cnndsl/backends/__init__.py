"""From the IR to PyTorch source, ONNX and spec text; from ONNX to the IR; running ONNX models."""
