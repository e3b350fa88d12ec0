"""The data plane and what it drives: loaded models, backends, dynamic batching, statistics, cache, tracing, shared
memory. Protocol-agnostic: the front ends translate gRPC and REST into its calls."""
