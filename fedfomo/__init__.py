"""FedFomo: personalized federated learning with first-order model optimization, on Flower."""

__version__ = "0.1.0"
