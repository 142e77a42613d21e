"""Point labels of a Pareto panel: every point named by its whole config tag, placed so
that labels neither overlap markers or each other nor leave the axes."""

from __future__ import annotations

import math

import pandas as pd

from bench.plot_data import short_tag

# candidate label offsets (points): nearest first, right/left/up/down then diagonals
_RADII = (5, 10, 16, 24, 34, 46, 60)
_DIRECTIONS = ((1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (-1, 1), (1, -1), (-1, -1))


def place_labels(fig, ax, points: pd.DataFrame, fontsize: float = 6) -> list:
    """Label every point with its config tag, greedily (most crowded points first would be
    optimal; nearest offset first is simple and enough here): for each point try offsets of
    growing radius in eight directions and keep the first whose box stays inside the axes and
    overlaps no marker and no label placed before; far offsets get a leader line. The layout
    is frozen first, so saving does not move the axes under the labels."""
    fig.canvas.draw()  # final layout (constrained), then freeze it
    fig.set_layout_engine("none")
    renderer = fig.canvas.get_renderer()
    inside = ax.get_window_extent(renderer)
    xy = ax.transData.transform(points[["speedup", "value"]].to_numpy(float))  # display coords
    occupied = [_box(x - 4, y - 4, x + 4, y + 4) for x, y in xy]  # the markers
    labels = []
    for (_, row), (px, py) in zip(points.iterrows(), xy):
        text = short_tag(row["config_tag"], row["steps"])
        best, best_cost = None, math.inf
        for radius in _RADII:
            for dx, dy in _DIRECTIONS:
                art = _annotation(ax, text, row, radius * dx / math.hypot(dx, dy), radius * dy / math.hypot(dx, dy),
                                  fontsize, leader=radius >= 16)  # fmt: skip
                box = art.get_window_extent(renderer)
                cost = _overlap(box, occupied) + (0 if _contains(inside, box) else 1e9)
                if cost < best_cost:
                    if best is not None:
                        best.remove()
                    best, best_cost, best_box = art, cost, box
                else:
                    art.remove()
                if best_cost == 0:
                    break
            if best_cost == 0:
                break
        occupied.append(best_box)
        labels.append(best)
    return labels


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
            "boxstyle": "square,pad=0.15",
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
