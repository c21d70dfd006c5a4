"""The estimators.  Each fits through ``Recommender``'s fit template and serves
through its one serving API."""
from .als import ALS
from .base import Fitted, Recommender
from .bpr import BPR
from .factors import FactorModel
from .state import FittedState

__all__ = ["ALS", "BPR", "FactorModel", "Fitted", "FittedState", "Recommender"]
