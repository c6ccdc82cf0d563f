"""Columns of equal length kept in preallocated tensors that double when full (the tracker's state)."""

from __future__ import annotations

import torch


class ColumnTable:
    """Rows of named columns, stored in tensors of capacity >= rows that grow by doubling.

    Args:
        columns: name -> (per-row shape, dtype); e.g. ``{"box": ((4,), torch.float32)}``.
        capacity: rows to preallocate.

    Appending is amortised O(rows appended); :meth:`keep` compacts the kept rows to the front in order, so
    the memory and time of every operation depend on the rows held, never on the rows that went through.
    """

    def __init__(self, columns: dict[str, tuple[tuple[int, ...], torch.dtype]], capacity: int = 64) -> None:
        self.size = 0
        self._data = {k: torch.empty((capacity, *shape), dtype=dt) for k, (shape, dt) in columns.items()}

    def __len__(self) -> int:
        return self.size

    @property
    def capacity(self) -> int:
        return next(iter(self._data.values())).shape[0]

    def col(self, name: str) -> torch.Tensor:
        """A view of column ``name``: (rows, *shape); writing to it writes the table."""
        return self._data[name][: self.size]

    def _grow(self, need: int) -> None:
        cap = self.capacity
        if need <= cap:
            return
        while cap < need:
            cap *= 2
        for k, t in self._data.items():
            new = torch.empty((cap, *t.shape[1:]), dtype=t.dtype)
            new[: self.size] = t[: self.size]
            self._data[k] = new

    def append(self, **values: torch.Tensor) -> None:
        """Append rows: every column given as an (R, *shape) tensor with the same R."""
        if set(values) != set(self._data):
            raise ValueError(f"append needs columns {sorted(self._data)}, got {sorted(values)}")
        r = int(next(iter(values.values())).shape[0])
        self._grow(self.size + r)
        for k, v in values.items():
            self._data[k][self.size : self.size + r] = v
        self.size += r

    def rows(self, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Copies of the rows where ``mask`` (rows,) bool is true, per column."""
        return {k: t[: self.size][mask] for k, t in self._data.items()}

    def slice(self, start: int, stop: int) -> dict[str, torch.Tensor]:
        """Copies of rows ``start:stop``, per column (O(stop - start), whatever the table's size)."""
        return {k: t[start:stop].clone() for k, t in self._data.items()}

    def keep(self, mask: torch.Tensor) -> None:
        """Keep only the rows where ``mask`` (rows,) bool is true, in their order."""
        idx = torch.nonzero(mask, as_tuple=True)[0]
        for t in self._data.values():
            t[: idx.numel()] = t[idx]
        self.size = int(idx.numel())
