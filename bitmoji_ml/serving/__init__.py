"""Serving: the exported ONNX model at work, never torch.

onnx_model (the onnxruntime predictor) -> folder_engine (`bitmoji predict` on this machine) and
predict_job; image_batch (bytes in, rows out) -> image_model (the registered MLflow pyfunc),
ray_engine (Ray Data actors) and, through MLflow, Spark; model_server + scoring_app (`bitmoji
serve`); processes (local servers in their own process group).

Kept empty on purpose: the registered image model ships this file in its code folder, so it must
import nothing (see image_model_registry.CODE_MODULES).
"""
