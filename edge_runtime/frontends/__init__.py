"""Protocol front ends over the data plane: gRPC (Open Inference Protocol, grpc.health.v1) and KServe v2 REST."""
