"""Floor-plan route planning for the navigation task (grid Dijkstra + string pulling).

The scene's walls and furniture are rasterised on a grid (default 5 cm)
and inflated by a clearance radius (the chair's half width, so the chair's
centre may go wherever the grid is free).  Two kinds of path:

* :meth:`FloorPlan.shortest` — the geometric shortest path (Dijkstra on
  the 8-connected grid, then shortened by line-of-sight "string pulling"),
  the reference of the ``path_length_ratio`` metric;
* :meth:`FloorPlan.route` — the route a person would take: cells near
  obstacles cost more (up to ``1 + clearance_cost`` within ``prefer_m``),
  so the route runs down the middle of corridors and doorways.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra

from bciarm.sim.scene import SceneSpec

_STEPS = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]


class FloorPlan:
    """Occupancy grid of a mobile scene and route planning on it.

    Parameters
    ----------
    spec : SceneSpec
        A ``kind: mobile`` scene.
    inflate_m : float
        Clearance radius: cells closer than this to an obstacle are blocked.
    resolution : float
        Grid cell size, m.
    prefer_m, clearance_cost : float
        Route cost: ``1 + clearance_cost * max(0, prefer_m - d) / prefer_m``
        per metre, d the distance to the nearest obstacle.
    """

    def __init__(self, spec: SceneSpec, inflate_m: float = 0.33, resolution: float = 0.05,
                 prefer_m: float = 0.8, clearance_cost: float = 4.0) -> None:
        self.res = float(resolution)
        self.origin = spec.workspace.lower[:2].copy()
        size = spec.workspace.upper[:2] - self.origin
        self.shape = (int(math.ceil(size[0] / self.res)) + 1, int(math.ceil(size[1] / self.res)) + 1)
        occ = np.zeros(self.shape, dtype=bool)
        xs = self.origin[0] + self.res * np.arange(self.shape[0])
        ys = self.origin[1] + self.res * np.arange(self.shape[1])
        gx, gy = np.meshgrid(xs, ys, indexing="ij")
        for b in spec.boxes:
            half = b.size[:2] / 2
            occ |= (np.abs(gx - b.centre[0]) <= half[0]) & (np.abs(gy - b.centre[1]) <= half[1])
        # Outside the workspace counts as occupied (grid border).
        occ[0, :] = occ[-1, :] = occ[:, 0] = occ[:, -1] = True
        self.occupied = occ
        self.distance = ndimage.distance_transform_edt(~occ) * self.res
        self.free = self.distance > inflate_m
        self.inflate_m = float(inflate_m)
        self._cost = 1.0 + clearance_cost * np.clip(prefer_m - self.distance, 0, None) / prefer_m
        self._graphs: dict[str, csr_matrix] = {}

    # ------------------------------------------------------------------ grid helpers

    def cell(self, xy: np.ndarray) -> tuple[int, int]:
        i = int(round((xy[0] - self.origin[0]) / self.res))
        j = int(round((xy[1] - self.origin[1]) / self.res))
        return min(max(i, 0), self.shape[0] - 1), min(max(j, 0), self.shape[1] - 1)

    def point(self, ij: tuple[int, int]) -> np.ndarray:
        return self.origin + self.res * np.asarray(ij, dtype=float)

    def nearest_free(self, xy: np.ndarray) -> tuple[int, int]:
        """The free cell nearest to ``xy``."""
        i, j = self.cell(xy)
        if self.free[i, j]:
            return i, j
        fi, fj = np.nonzero(self.free)
        k = int(np.argmin((fi - i) ** 2 + (fj - j) ** 2))
        return int(fi[k]), int(fj[k])

    def _graph(self, kind: str) -> csr_matrix:
        if kind in self._graphs:
            return self._graphs[kind]
        nx, ny = self.shape
        idx = np.arange(nx * ny).reshape(nx, ny)
        rows, cols, w = [], [], []
        cost = self._cost if kind == "route" else np.ones(self.shape)
        for di, dj in _STEPS:
            a = self.free[max(0, -di):nx - max(0, di), max(0, -dj):ny - max(0, dj)]
            b = self.free[max(0, di):nx - max(0, -di) or None, max(0, dj):ny - max(0, -dj) or None]
            ok = a & b
            src = idx[max(0, -di):nx - max(0, di), max(0, -dj):ny - max(0, dj)][ok]
            dst = idx[max(0, di):nx - max(0, -di) or None, max(0, dj):ny - max(0, -dj) or None][ok]
            step = self.res * math.hypot(di, dj)
            c = cost.ravel()
            rows.append(src)
            cols.append(dst)
            w.append(step * 0.5 * (c[src] + c[dst]))
        g = csr_matrix((np.concatenate(w), (np.concatenate(rows), np.concatenate(cols))),
                       shape=(nx * ny, nx * ny))
        self._graphs[kind] = g
        return g

    def _search(self, start: np.ndarray, goal: np.ndarray, kind: str) -> np.ndarray:
        s, g = self.nearest_free(start), self.nearest_free(goal)
        ny = self.shape[1]
        si, gi = s[0] * ny + s[1], g[0] * ny + g[1]
        dist, pred = dijkstra(self._graph(kind), indices=si, return_predecessors=True)
        if not np.isfinite(dist[gi]):
            raise ValueError(f"no path from {np.round(start, 2)} to {np.round(goal, 2)}")
        cells = [gi]
        while cells[-1] != si:
            cells.append(int(pred[cells[-1]]))
        cells.reverse()
        pts = np.array([self.point((c // ny, c % ny)) for c in cells])
        return np.vstack([np.asarray(start, float)[:2], pts[1:-1], np.asarray(goal, float)[:2]]) \
            if len(pts) > 2 else np.vstack([np.asarray(start, float)[:2],
                                            np.asarray(goal, float)[:2]])

    def visible(self, a: np.ndarray, b: np.ndarray) -> bool:
        """True if the straight segment a→b stays in free cells."""
        n = max(2, int(math.ceil(np.linalg.norm(b - a) / (0.5 * self.res))) + 1)
        for t in np.linspace(0.0, 1.0, n):
            i, j = self.cell(a + t * (b - a))
            if not self.free[i, j]:
                return False
        return True

    def _pull(self, pts: np.ndarray) -> np.ndarray:
        out = [pts[0]]
        i = 0
        while i < len(pts) - 1:
            j = len(pts) - 1
            while j > i + 1 and not self.visible(pts[i], pts[j]):
                j -= 1
            out.append(pts[j])
            i = j
        return np.array(out)

    # ------------------------------------------------------------------ public

    def shortest(self, start: np.ndarray, goal: np.ndarray) -> np.ndarray:
        """Shortest collision-free polyline (M, 2) from ``start`` to ``goal``."""
        return self._pull(self._search(start, goal, "shortest"))

    def route(self, start: np.ndarray, goal: np.ndarray) -> np.ndarray:
        """A comfortable route (M, 2): keeps to the middle of corridors and doorways."""
        return self._search(start, goal, "route")


def path_length(pts: np.ndarray) -> float:
    """Length of a polyline (M, 2)."""
    return float(np.sum(np.linalg.norm(np.diff(pts, axis=0), axis=1))) if len(pts) > 1 else 0.0


def lookahead_point(path: np.ndarray, position: np.ndarray, start_index: int,
                    distance: float, window: int = 60) -> tuple[np.ndarray, int]:
    """Point ``distance`` ahead along ``path`` of the closest vertex near ``start_index``.

    Returns the point and the index of the closest vertex (progress never goes back).
    """
    hi = min(len(path), start_index + window)
    seg = path[start_index:hi]
    k = start_index + int(np.argmin(np.linalg.norm(seg - position[:2], axis=1)))
    left = distance
    p = path[k]
    for m in range(k + 1, len(path)):
        step = float(np.linalg.norm(path[m] - p))
        if step >= left:
            return p + (path[m] - p) * (left / step), k
        left -= step
        p = path[m]
    return path[-1].copy(), k
