"""Exporting a trained segmentation model for deployment: TorchScript, ONNX, int8 ONNX, ExecuTorch, checks."""
