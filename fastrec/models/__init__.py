"""The estimators.  Each goes through ``FactorModel``'s fit template and serves
through its one serving API."""
from .als import ALS
from .base import FactorModel, FittedState
from .bpr import BPR

__all__ = ["ALS", "BPR", "FactorModel", "FittedState"]
