"""Interaction data: raw ids <-> indices, duplicates, weighting, reading tables.

The public entry point is ``fastrec.Interactions``.
"""
from .idmap import IdMap
from .interactions import Interactions

__all__ = ["Interactions", "IdMap"]
