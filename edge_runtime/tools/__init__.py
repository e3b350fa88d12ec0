"""What people run against a device: the ``fedge edge`` commands, the gRPC and REST clients, ``fedge edge perf``."""
