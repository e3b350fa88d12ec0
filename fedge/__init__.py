"""fedge: federated learning that ends on the edge."""

__version__ = "0.1.0"
