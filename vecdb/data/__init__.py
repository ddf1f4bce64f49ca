"""Datasets: file readers (fvecs/ivecs/bvecs, ann-benchmarks HDF5, .npy folders), synthetic
generators, and a registry that names datasets for the benchmark CLI."""
from vecdb.data.dataset import Dataset
from vecdb.data.registry import dataset_names, load_dataset

__all__ = ["Dataset", "dataset_names", "load_dataset"]
