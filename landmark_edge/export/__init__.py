"""Export to ONNX and TensorRT engines, and the deployment profiles that drive both."""
