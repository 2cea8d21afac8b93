"""Line plots for the benchmark scripts (matplotlib, headless): one PNG per figure."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence


def line_plot(path: str | Path, panels: Sequence[dict], title: str = "",
              columns: int | None = None) -> Path:
    """Writes panels side by side (`columns` per row, default all in one row); each panel is
    {"series": {label: (xs, ys)}, "xlabel", "ylabel", optional "logx"/"logy" (bool), optional
    "title"}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(dict.fromkeys(label for panel in panels for label in panel["series"]))
    rows_of_legend = (len(labels) + 1) // 2
    height = 4.5 + 0.25 * rows_of_legend
    columns = columns or len(panels)
    grid_rows = -(-len(panels) // columns)
    panel_height = height - 0.25 * rows_of_legend
    height = panel_height * grid_rows + 0.25 * rows_of_legend
    figure, axes = plt.subplots(grid_rows, columns, figsize=(6 * columns, height), squeeze=False)
    for axis in axes.flat[len(panels):]:
        axis.set_visible(False)
    for axis, panel in zip(axes.flat, panels):
        series: Mapping = panel["series"]
        for label, (xs, ys) in series.items():
            axis.plot(xs, ys, marker="o", markersize=3, label=label)
        axis.set_xlabel(panel["xlabel"])
        axis.set_ylabel(panel["ylabel"])
        if panel.get("logx"):
            axis.set_xscale("log")
        if panel.get("logy"):
            axis.set_yscale("log")
        if panel.get("title"):
            axis.set_title(panel["title"])
        axis.grid(True, alpha=0.3)
    by_name = {}
    for axis in axes.flat[:len(panels)]:  # panels may lack some series: gather every label
        for handle, name in zip(*axis.get_legend_handles_labels()):
            by_name.setdefault(name, handle)
    names, handles = list(by_name), list(by_name.values())
    figure.legend(handles, names, loc="lower center", ncol=2, fontsize=8, frameon=False)
    if title:
        figure.suptitle(title)
    figure.tight_layout(rect=(0, 0.25 * rows_of_legend / height + 0.02, 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
