"""Order of the frames of an XANES-imaging run (pure, no beamline imports).

A consumer maps each frame to (energy_index, tile_index) either from the run's events (every event of the
``primary``, ``flat`` and ``dark`` streams carries ``energy_index`` and ``tile_index``; −1 = not applicable) or,
before any event arrives, from the start document with :func:`frame_order`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from xbeam_bluesky.documents import n_tiles, start_energies
from xbeam_bluesky.errors import PlanArgumentError

#: Acquisition orders: ``"energy"`` = energy outer (all tiles at one energy, then the next energy);
#: ``"tile"`` = tile outer (the whole energy list at one tile, then the next tile).
ORDERS = ("energy", "tile")


def acquisition_order(n_energies: int, n_tiles: int, order: str = "energy") -> list[tuple[int, int]]:
    """(energy_index, tile_index) of each primary frame, in acquisition (seq_num) order.

    Parameters
    ----------
    n_energies, n_tiles : int
        Number of energies and of tiles.
    order : {"energy", "tile"}
        Which loop is outer.

    Returns
    -------
    list of (int, int)
        Entry ``seq_num − 1`` is the (energy_index, tile_index) of primary event ``seq_num``.
    """
    if order not in ORDERS:
        raise PlanArgumentError(f"order={order!r}; expected one of {ORDERS}")
    if order == "energy":
        return [(ie, it) for ie in range(n_energies) for it in range(n_tiles)]
    return [(ie, it) for it in range(n_tiles) for ie in range(n_energies)]


def frame_order(start: Mapping[str, Any]) -> list[tuple[int, int]]:
    """(energy_index, tile_index) of each primary frame of an ``xanes_imaging`` run from its start document."""
    return acquisition_order(len(start_energies(start)), n_tiles(start), start["order"])
