"""Datasets: loaders, the embedded demo data and a synthetic generator."""
