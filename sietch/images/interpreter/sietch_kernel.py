"""IPython extension of the code-interpreter image's kernels (``sietch_kernel``): the
rich-result formats the ``e2b-code-interpreter`` SDK reads beyond IPython's own, the
per-cell environment the gateway sets, and the way back to a fresh kernel's namespace
after the gateway's warm-up cell.

- ``application/x-sietch-chart+json``: a matplotlib figure's data (the SDK's ``chart``):
  line and scatter points, bars, titles, labels, ticks and scales.
- ``application/x-sietch-data+json``: a pandas DataFrame's columns (the SDK's ``data``).

"""

from __future__ import annotations

import os
import sys
from typing import Any

from IPython import get_ipython
from IPython.core.formatters import BaseFormatter
from traitlets import ObjectName, Unicode

CHART = "application/x-sietch-chart+json"
DATA = "application/x-sietch-data+json"

_saved: list[dict[str, str | None]] = []
_fresh: dict[str, dict[str, Any]] = {"names": {}, "hidden": {}}


def push_env(env: dict[str, str]) -> None:
    """Set ``env`` for one cell; :func:`pop_env` puts back what was there."""
    _saved.append({k: os.environ.get(k) for k in env})
    os.environ.update(env)


def pop_env() -> None:
    for key, value in _saved.pop().items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def save_fresh() -> None:
    """Remember the namespace of a kernel that has run no cell of the user's yet (before
    the gateway's warm-up cell, see :func:`back_to_fresh`)."""
    shell = get_ipython()
    _fresh.update(names=dict(shell.user_ns), hidden=dict(shell.user_ns_hidden))


def back_to_fresh() -> None:
    """The namespace and execution count :func:`save_fresh` saw, after cells that ran
    since: IPython's reset (names gone, a new history session, execution count 1), then
    the fresh names it does not put back (``_``, ``__doc__``, ``__spec__``, ...)."""
    shell = get_ipython()
    shell.reset(new_session=True)
    for key, value in _fresh["names"].items():
        shell.user_ns.setdefault(key, value)
    for key, value in _fresh["hidden"].items():
        shell.user_ns_hidden.setdefault(key, value)


class _TypeFormatter(BaseFormatter):  # type: ignore[misc]
    """Formats instances of one class, found by name in ``sys.modules`` (so an output of
    another kind costs no import). Not ``for_type``: IPython drops every formatter's
    Figure printer whenever matplotlib's inline backend is set up."""

    _return_type = (dict, list)
    module = ""
    name = ""

    @staticmethod
    def render(obj: Any) -> dict[str, Any]:
        raise NotImplementedError

    def __call__(self, obj: Any) -> Any:
        cls = getattr(sys.modules.get(self.module), self.name, None)
        if cls is None or not isinstance(obj, cls):
            return super().__call__(obj)
        try:
            return self.render(obj)
        except Exception:  # a figure it cannot read still shows as an image
            return None


def _number(value: Any) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def _label(artist: Any) -> str:
    label = str(artist.get_label() or "")
    return "" if label.startswith("_") else label  # matplotlib's own "_child0" names


def _axis(ax: Any, which: str) -> dict[str, Any]:
    ticks = getattr(ax, f"get_{which}ticks")()
    labels = getattr(ax, f"get_{which}ticklabels")()
    return {
        f"{which}_label": getattr(ax, f"get_{which}label")() or None,
        f"{which}_unit": None,
        f"{which}_ticks": [_number(t) for t in ticks],
        f"{which}_tick_labels": [t.get_text() for t in labels],
        f"{which}_scale": getattr(ax, f"get_{which}scale")(),
    }


def axes_chart(ax: Any) -> dict[str, Any]:
    """One Axes as the SDK's chart: ``line``, ``scatter``, ``bar`` or ``unknown``."""
    from matplotlib.collections import PathCollection
    from matplotlib.container import BarContainer

    title = ax.get_title() or None
    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    if bars:
        ticks = [t.get_text() for t in ax.get_xticklabels()]
        elements = []
        for container in bars:
            group = _label(container)
            for i, patch in enumerate(container.patches):
                label = ticks[i] if i < len(ticks) else str(i)
                elements.append({"label": label, "group": group, "value": patch.get_height()})
        return {
            "type": "bar",
            "title": title,
            "x_label": ax.get_xlabel() or None,
            "y_label": ax.get_ylabel() or None,
            "x_unit": None,
            "y_unit": None,
            "elements": elements,
        }
    lines = ax.get_lines()
    dots = [c for c in ax.collections if isinstance(c, PathCollection)]
    if lines or dots:
        if lines:
            kind = "line"
            series = [(line, line.get_xydata()) for line in lines]
        else:
            kind = "scatter"
            series = [(c, c.get_offsets()) for c in dots]
        elements = [
            {
                "label": _label(artist),
                "points": [[_number(x), _number(y)] for x, y in points],
            }
            for artist, points in series
        ]
        return {
            "type": kind,
            "title": title,
            **_axis(ax, "x"),
            **_axis(ax, "y"),
            "elements": elements,
        }
    return {"type": "unknown", "title": title, "elements": []}


def figure_chart(figure: Any) -> dict[str, Any]:
    axes = figure.get_axes()
    if len(axes) == 1:
        return axes_chart(axes[0])
    title = figure._suptitle.get_text() if figure._suptitle else None
    return {"type": "superchart", "title": title, "elements": [axes_chart(a) for a in axes]}


def frame_data(frame: Any) -> dict[str, Any]:
    import pandas

    columns: dict[str, Any] = frame.to_dict(orient="list")
    return {
        str(name): [v.isoformat() if isinstance(v, pandas.Timestamp) else v for v in values]
        for name, values in columns.items()
    }


class ChartFormatter(_TypeFormatter):
    format_type = Unicode(CHART)
    print_method = ObjectName("_repr_sietch_chart_")
    module, name = "matplotlib.figure", "Figure"
    render = staticmethod(figure_chart)


class DataFormatter(_TypeFormatter):
    format_type = Unicode(DATA)
    print_method = ObjectName("_repr_sietch_data_")
    module, name = "pandas.core.frame", "DataFrame"
    render = staticmethod(frame_data)


def _as_is(obj: Any) -> Any:
    return obj


def load_ipython_extension(ip: Any) -> None:
    # Message dates stay strings (ipykernel reads none; dateutil's parsing of each request's
    # two is slow under emulation).
    import jupyter_client.session

    jupyter_client.session.extract_dates = _as_is
    display = ip.display_formatter
    for cls in (ChartFormatter, DataFormatter):
        formatter = cls(parent=display)
        display.formatters[formatter.format_type] = formatter
    display.active_types = [*display.active_types, CHART, DATA]
