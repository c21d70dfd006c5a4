"""The estimators.  Each fits through ``Recommender``'s fit template and serves
through its one serving API."""
from .als import ALS
from .base import Fitted, Recommender
from .bpr import BPR
from .ease import EASE
from .factors import FactorModel
from .knn import ItemKNN
from .state import FittedState

__all__ = ["ALS", "BPR", "EASE", "FactorModel", "ItemKNN", "Fitted", "FittedState", "Recommender"]
