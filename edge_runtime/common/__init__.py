"""What every part of the edge runtime speaks: domain errors with their gRPC and HTTP statuses, tensor datatypes,
TLS files."""
