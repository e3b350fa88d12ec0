"""fedge edge runtime: serves signed fedge releases over the Open Inference Protocol (KServe v2) gRPC.

Imports only numpy, grpcio, protobuf, onnxruntime, cryptography and prometheus-client (TensorRT where present):
never torch or flwr, so it installs on small devices with `pip install ".[edge]"`.
"""
