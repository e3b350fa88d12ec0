"""From global model to signed edge release: prune -> recover -> ONNX -> federated INT8 calibration -> gate ->
bundle."""
