"""Point labels of a Pareto panel: every point named by its whole config tag, placed so
that labels neither overlap markers or each other nor leave the axes, and no leader line
runs through another label or marker."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from matplotlib.text import Text

from bench.plot_data import short_tag

# candidate label offsets (points): nearest first; far ones reach the empty bands that the
# error bars leave above and below a crowded middle
_RADII = (5, 8, 10, 13, 16, 20, 24, 29, 34, 40, 46, 53, 60, 70, 80, 92, 105, 120, 135, 150, 170)
_DIRECTIONS = ((1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (-1, 1), (1, -1), (-1, -1),
               (0.5, 1), (-0.5, 1), (0.5, -1), (-0.5, -1), (1, 0.5), (-1, 0.5), (1, -0.5), (-1, -0.5))  # fmt: skip
_LEADER_FROM = 16  # offsets this far or farther get a leader line
_MARKER = 4.0  # half size of a marker's box (display units)
_CROWD_RADIUS = 50.0  # display units: neighbours this close make a point "crowded"
_PAD = 0.15  # white box around a label's text, in units of its font size
_CROSSING = 400.0  # cost of a leader crossing a box, as an overlap area (display units^2)
_ATTEMPTS = 4  # greedy passes at most (a label left overlapping chooses first in the next)


def place_labels(fig, ax, points: pd.DataFrame, fontsize: float = 6) -> list:
    """Label every point with its config tag (returned in the order of ``points``), greedily:
    the most crowded points first, each trying offsets of growing radius in sixteen directions
    and keeping the first whose text stays inside the axes, overlaps no marker and no label
    placed before, and whose leader line (far offsets) crosses neither, nor is crossed by an
    earlier leader; when none is free, the cheapest. A label left with a cost moves to the
    front of the order and the greedy pass runs again (up to ``_ATTEMPTS`` passes; the layout
    of least total cost is kept). The layout is frozen first, so saving does not move the axes
    under the labels."""
    fig.canvas.draw()  # final layout (constrained), then freeze it
    fig.set_layout_engine("none")
    renderer = fig.canvas.get_renderer()
    inside = ax.get_window_extent(renderer)
    xy = ax.transData.transform(points[["speedup", "value"]].to_numpy(float))  # (n, 2) display coords
    markers = [_box(x - _MARKER, y - _MARKER, x + _MARKER, y + _MARKER) for x, y in xy]
    order = crowded_first(xy)
    best: dict[int, _Placed] | None = None
    for _ in range(_ATTEMPTS):
        placed: dict[int, _Placed] = {}
        for i in order:
            placed[i] = _best_spot(ax, renderer, inside, points.iloc[i], xy[i], markers, i, placed, fontsize)
        if best is None or _total(placed) < _total(best):
            discard, best = best or {}, placed
        else:
            discard = placed
        for p in discard.values():
            p.art.remove()
        stuck = [i for i in order if best[i].cost > 0]
        if not stuck:
            break
        order = stuck + [i for i in order if i not in stuck]  # the stuck labels choose first
    return [best[i].art for i in range(len(points))]


def _total(placed: dict[int, _Placed]) -> float:
    return sum(p.cost for p in placed.values())


class _Placed(NamedTuple):
    """A label's annotation, its text box, its leader segment (None: no leader) and its cost."""

    art: Any
    box: Any
    leader: tuple[np.ndarray, np.ndarray] | None
    cost: float


def _best_spot(ax, renderer, inside, row: pd.Series, at: np.ndarray, markers: list, i: int,
               placed: dict[int, _Placed], fontsize: float) -> _Placed:  # fmt: skip
    """The first free candidate offset for point ``i`` at display position ``at``, else the
    cheapest: overlap with the other markers and the ``placed`` labels, leaving the axes, and
    leader lines crossing boxes (its own through others', others' through its box)."""
    others = markers[:i] + markers[i + 1 :]
    texts = [p.box for p in placed.values()]
    leaders = [p.leader for p in placed.values() if p.leader is not None]
    text = short_tag(row["config_tag"], row["steps"])
    best: _Placed | None = None
    for radius in _RADII:
        for dx, dy in _DIRECTIONS:
            norm = math.hypot(dx, dy)
            leader = radius >= _LEADER_FROM
            art = _annotation(ax, text, row, radius * dx / norm, radius * dy / norm, fontsize, leader)
            box = text_box(art, renderer)
            cost = _overlap(box, others + texts) + (0 if _contains(inside, box) else 1e9)
            cost += _CROSSING * sum(_crosses(a, b, box) for a, b in leaders)
            segment = (at, _center(box)) if leader else None  # the line runs to the text's centre
            if segment is not None:
                cost += _CROSSING * sum(_crosses(*segment, o) for o in others + texts)
            if best is None or cost < best.cost:
                if best is not None:
                    best.art.remove()
                best = _Placed(art, box, segment, cost)
            else:
                art.remove()
            if best.cost == 0:
                return best
    return best


def text_box(art, renderer):
    """The display box an annotation's label covers: its text with the white box around it
    (``_PAD`` of the font size, plus a pixel), without its leader line (matplotlib's
    ``Annotation.get_window_extent`` is the union of both); positions resolved first."""
    art.update_positions(renderer)
    pad = _PAD * art.get_fontsize() * art.figure.dpi / 72 + 1
    return Text.get_window_extent(art, renderer).padded(pad)


def crowded_first(xy: np.ndarray) -> list[int]:
    """Indices of the points (n, 2), those with the most neighbours within ``_CROWD_RADIUS``
    first (ties: in order): they have the fewest free spots, so they choose first."""
    if len(xy) == 0:
        return []
    distance = np.linalg.norm(xy[:, None, :] - xy[None, :, :], axis=-1)  # (n, n)
    neighbours = (distance < _CROWD_RADIUS).sum(axis=1) - 1
    return sorted(range(len(xy)), key=lambda k: -int(neighbours[k]))


def _annotation(ax, text: str, row: pd.Series, dx: float, dy: float, fontsize: float, leader: bool):
    ha = "left" if dx > 0.5 else "right" if dx < -0.5 else "center"
    va = "bottom" if dy > 0.5 else "top" if dy < -0.5 else "center"
    leader_line = {"arrowstyle": "-", "color": "0.7", "lw": 0.5, "shrinkA": 0, "shrinkB": 3}
    art = ax.annotate(
        text,
        (row["speedup"], row["value"]),
        xytext=(dx, dy),
        textcoords="offset points",
        fontsize=fontsize,
        color="dimgray",
        bbox={
            "boxstyle": f"square,pad={_PAD}",
            "fc": "white",
            "ec": "none",
            "alpha": 0.75,
        },  # readable over lines
        ha=ha,
        va=va,
        annotation_clip=False,
        arrowprops=leader_line if leader else None,
    )
    art.set_in_layout(False)
    return art


def _box(x0: float, y0: float, x1: float, y1: float):
    from matplotlib.transforms import Bbox

    return Bbox([[x0, y0], [x1, y1]])


def _overlap(box, others) -> float:
    """Total area of ``box`` shared with the boxes in ``others`` (display units^2)."""
    total = 0.0
    for o in others:
        w = min(box.x1, o.x1) - max(box.x0, o.x0)
        h = min(box.y1, o.y1) - max(box.y0, o.y0)
        if w > 0 and h > 0:
            total += w * h
    return total


def _contains(outer, box) -> bool:
    return outer.x0 <= box.x0 and box.x1 <= outer.x1 and outer.y0 <= box.y0 and box.y1 <= outer.y1


def _center(box) -> np.ndarray:
    """The centre of ``box``, where matplotlib aims an annotation's leader line (its ``relpos``)."""
    return np.array([(box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2])


def _crosses(a: np.ndarray, b: np.ndarray, box) -> bool:
    """Does the segment a-b pass through the interior of ``box``? (Liang-Barsky clipping.)"""
    d = b - a
    low, high = 0.0, 1.0
    for p, q in (
        (-d[0], a[0] - box.x0),
        (d[0], box.x1 - a[0]),
        (-d[1], a[1] - box.y0),
        (d[1], box.y1 - a[1]),
    ):
        if p == 0:
            if q <= 0:
                return False  # parallel to this edge and outside it
            continue
        t = q / p
        if p < 0:
            low = max(low, t)
        else:
            high = min(high, t)
        if low >= high:
            return False
    return high - low > 1e-9
