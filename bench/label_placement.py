"""Point labels of a Pareto panel: every point named by its whole config tag, placed so
that labels neither overlap markers or each other nor leave the axes, and no leader line
runs through another label or marker."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.text import Text

from bench.plot_data import short_tag

# candidate label offsets (points): nearest first; far ones reach the empty bands that the
# error bars leave above and below a crowded middle
_RADII = (5, 10, 16, 24, 34, 46, 60, 80, 105, 135, 170)
_DIRECTIONS = ((1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (-1, 1), (1, -1), (-1, -1),
               (0.5, 1), (-0.5, 1), (0.5, -1), (-0.5, -1), (1, 0.5), (-1, 0.5), (1, -0.5), (-1, -0.5))  # fmt: skip
_LEADER_FROM = 16  # offsets this far or farther get a leader line
_MARKER = 4.0  # half size of a marker's box (display units)
_CROWD_RADIUS = 50.0  # display units: neighbours this close make a point "crowded"
_PAD = 0.15  # white box around a label's text, in units of its font size
_CROSSING = 400.0  # cost of a leader crossing a box, as an overlap area (display units^2)


def place_labels(fig, ax, points: pd.DataFrame, fontsize: float = 6) -> list:
    """Label every point with its config tag (returned in the order of ``points``), greedily:
    the most crowded points first, each trying offsets of growing radius in sixteen directions
    and keeping the first whose text stays inside the axes, overlaps no marker and no label
    placed before, and whose leader line (far offsets) crosses neither, nor is crossed by an
    earlier leader; when none is free, the cheapest. The layout is frozen first, so saving does
    not move the axes under the labels."""
    fig.canvas.draw()  # final layout (constrained), then freeze it
    fig.set_layout_engine("none")
    renderer = fig.canvas.get_renderer()
    inside = ax.get_window_extent(renderer)
    xy = ax.transData.transform(points[["speedup", "value"]].to_numpy(float))  # (n, 2) display coords
    markers = [_box(x - _MARKER, y - _MARKER, x + _MARKER, y + _MARKER) for x, y in xy]
    texts: list = []  # text boxes placed so far
    leaders: list[tuple[np.ndarray, np.ndarray]] = []  # leader segments placed so far
    labels: list = [None] * len(points)
    for i in crowded_first(xy):
        row = points.iloc[i]
        others = markers[:i] + markers[i + 1 :]
        best, best_cost = None, math.inf
        for radius in _RADII:
            for dx, dy in _DIRECTIONS:
                norm = math.hypot(dx, dy)
                leader = radius >= _LEADER_FROM
                art = _annotation(ax, short_tag(row["config_tag"], row["steps"]), row,
                                  radius * dx / norm, radius * dy / norm, fontsize, leader)  # fmt: skip
                box = text_box(art, renderer)
                cost = _overlap(box, others + texts) + (0 if _contains(inside, box) else 1e9)
                cost += _CROSSING * sum(_crosses(a, b, box) for a, b in leaders)
                if leader:
                    segment = (xy[i], _center(box))  # the line runs to the text's centre
                    cost += _CROSSING * sum(_crosses(*segment, o) for o in others + texts)
                if cost < best_cost:
                    if best is not None:
                        best.remove()
                    best, best_cost, best_box = art, cost, box
                    best_leader = segment if leader else None
                else:
                    art.remove()
                if best_cost == 0:
                    break
            if best_cost == 0:
                break
        texts.append(best_box)
        if best_leader is not None:
            leaders.append(best_leader)
        labels[i] = best
    return labels


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
