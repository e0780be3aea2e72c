"""The run's vectors read from its checkpoint file (``.lockstep/vectors.npy``) when asked for.

A corpus fitted on a sample (``cluster.fit_sample``) can be far larger than the fit: a million
posts of the fast tier are a gigabyte of vectors, and after the embed stage only the fit
sample's rows are needed in memory. The later readers (summaries' example posts, codebook
centroids) ask for one narrative's rows at a time, so ``DiskVectors[rows]`` reads just those
rows. The file is mapped one block of rows at a time and unmapped before the next, so the
process holds the rows it asked for and one block's pages at most, never the whole file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

BLOCK_ROWS = 65_536


class DiskVectors:
    """Read-only rows of a 2-d ``.npy`` file: ``v[int array]``, ``v[bool mask]``, ``v[slice]``
    return a new in-memory array, rows in the order asked."""

    def __init__(self, path: Path, block_rows: int = BLOCK_ROWS) -> None:
        self.path = Path(path)
        self.block_rows = block_rows
        with open(self.path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            read = {(1, 0): np.lib.format.read_array_header_1_0,
                    (2, 0): np.lib.format.read_array_header_2_0}.get(version)
            if read is None:
                raise ValueError(f"{self.path}: .npy format {version} is not read here")
            shape, fortran, dtype = read(fh)
            self.offset = fh.tell()
        if fortran or len(shape) != 2:
            raise ValueError(f"{self.path}: expected a C-ordered 2-d array, got shape {shape}")
        self.shape: tuple[int, int] = (int(shape[0]), int(shape[1]))
        self.dtype = np.dtype(dtype)

    @property
    def ndim(self) -> int:
        return 2

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        n = self.shape[0]
        if isinstance(key, slice):
            rows = np.arange(n)[key]
        else:
            key = np.asarray(key)
            if key.dtype == bool:
                if key.shape != (n,):
                    raise IndexError(f"boolean index of length {len(key)} for {n} rows")
                rows = np.flatnonzero(key)
            else:
                rows = key.astype(np.int64, copy=False).ravel()
                if len(rows) and (rows.min() < 0 or rows.max() >= n):
                    raise IndexError(f"row index out of range for {n} rows")
        return self.take(rows)

    def take(self, rows: np.ndarray) -> np.ndarray:
        out = np.empty((len(rows), self.shape[1]), dtype=self.dtype)
        if not len(rows):
            return out
        order = np.argsort(rows, kind="stable")
        wanted = rows[order]
        row_bytes = self.shape[1] * self.dtype.itemsize
        first_block, last_block = wanted[0] // self.block_rows, wanted[-1] // self.block_rows
        edges = np.searchsorted(wanted, np.arange(first_block, last_block + 2) * self.block_rows)
        for b, (lo, hi) in enumerate(zip(edges[:-1], edges[1:]), start=int(first_block)):
            if lo == hi:
                continue
            start = b * self.block_rows
            count = min(self.block_rows, self.shape[0] - start)
            block = np.memmap(self.path, dtype=self.dtype, mode="r",
                              offset=self.offset + start * row_bytes, shape=(count, self.shape[1]))
            out[order[lo:hi]] = block[wanted[lo:hi] - start]
            del block  # unmapped: its pages leave this process
        return out

    def __array__(self, dtype=None, copy=None):
        raise TypeError("DiskVectors is not turned into one array; index the rows you need")
