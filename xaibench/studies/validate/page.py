"""verdict.html of `xaibench validate`: one self-contained page that a researcher, a reviewer or a
co-author reads without Python.

    verdict_html(report) -> str

The page holds, in this order: what was validated; the verdict and the summary table (one row per
method and check, as on the terminal), the skipped checks and the notes; the relevance map of
the first sample per method and backend; the cascading randomization curve (the worst sample's
Spearman correlation against the number of top layers re-initialized, per method) with its
values per layer; the ledger per layer of the native LRP methods (conservation residual and
absorbed share per layer); every row of verdict.csv.

Maps: the first sample (and first target) on the input file's dimensions; leading dimensions
beyond the last two (channels) are summed; a 1-D input, or a few rows of one (a handful of
channels over levels), is drawn as lines, one per row. Large maps are averaged over blocks to at
most MAX_PIXELS a side. Each map has its own symmetric colour scale.

Self-contained: images are PNG (matplotlib's Agg, dpi DPI) embedded as base64 data URIs; no
script, no style sheet or font from elsewhere. Every string that comes from the user (model,
file names, variables, layer names, error messages) is escaped with html.escape.
"""

from __future__ import annotations

import base64
import html
import io
import math

import numpy as np
import torch

from xaibench.studies.validate.report import ERROR, FAIL, INFO, KNOWN, PASS, SKIPPED, Report, _number

DPI = 80
#: colours of the embedded PNGs
PALETTE = 256
#: a map larger than this (pixels a side) is averaged over blocks to fit
MAX_PIXELS = 96
#: a 2-D map with at most this many rows (or columns) is drawn as lines, one per row
MAX_LINES = 4

_MARKERS = ("o", "s", "^", "v", "D", "x")
_DASHES = ("-", "--", ":", "-.")
_COLOURS = {PASS: "#d7f0d2", FAIL: "#f7c6c1", ERROR: "#f7c6c1", KNOWN: "#fbe6b5", SKIPPED: "#eeeeee",
            INFO: "#e3ecf7"}
_STYLE = """
body { font-family: sans-serif; margin: 1.5em; max-width: 80em; color: #222; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #bbb; padding: 0.2em 0.5em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
td.number { text-align: right; font-family: monospace; }
figure { display: inline-block; margin: 0.3em; text-align: center; font-size: 0.8em; }
.verdict-PASS { color: #1a7f37; } .verdict-FAIL { color: #c62828; }
pre { background: #f7f7f7; padding: 0.5em; overflow-x: auto; font-size: 0.85em; }
details { margin: 0.5em 0; }
"""


def verdict_html(report: Report) -> str:
    """The page (see the module docstring) as one string."""
    from xaibench.studies.report.figures import default_style

    @default_style   # matplotlib's defaults, whatever the user's matplotlibrc says
    def body():
        return "\n".join([*_settings(report), *_verdict(report), *_maps(report), *_randomization(report),
                          *_ledger(report), *_all_checks(report)])

    title = f"xaibench validate: {report.settings.get('model')}"
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{_e(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
            f"<h1>{_e(title)}</h1>\n{body()}\n</body>\n</html>\n")


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _table(header, rows, numeric=()) -> list[str]:
    """An HTML table; each row is (cells, status or None); cells are escaped here."""
    lines = ["<table>", "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr>"]
    for cells, status in rows:
        style = f' style="background:{_COLOURS[status]}"' if status in _COLOURS else ""
        lines.append(f"<tr{style}>" + "".join(
            f'<td class="number">{_e(c)}</td>' if i in numeric else f"<td>{_e(c)}</td>"
            for i, c in enumerate(cells)) + "</tr>")
    return lines + ["</table>"]


def _image(figure, alt: str) -> str:
    """The figure as an <img> with the PNG inline; reduced to a palette of PALETTE colours (about half
    the size of matplotlib's RGBA, and no visible difference for these plots)."""
    from PIL import Image  # matplotlib's own dependency

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    buffer.seek(0)
    with Image.open(buffer) as image:
        reduced = image.convert("RGB").quantize(colors=PALETTE, method=Image.Quantize.MEDIANCUT)
        buffer = io.BytesIO()
        reduced.save(buffer, format="PNG", optimize=True)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'


# --- sections ----------------------------------------------------------------------------------
def _settings(report: Report) -> list[str]:
    s = report.settings
    items = [("weights", s.get("weights")), ("inputs", s.get("inputs")), ("variable", s.get("variable")),
             ("samples", s.get("samples")), ("model input shape", s.get("model_input_shape")),
             ("input note", s.get("input_note")), ("explained output", s.get("output")),
             ("precision", f"{s.get('dtype')}{' (' + s['dtype_note'] + ')' if s.get('dtype_note') else ''}"),
             ("target", "argmax of each output" if s.get("target") is None else s.get("target")),
             ("backends compared", ", ".join(map(str, s.get("backends") or [])) or "none"),
             ("tolerances", ", ".join(f"{k} {v:.3g}" for k, v in (s.get("tolerances") or {}).items())),
             ("randomization seed", s.get("seed")), ("xaibench", s.get("xaibench_version"))]
    return ["<table>", *(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in items if v not in (None, "")),
            "</table>"]


def _verdict(report: Report) -> list[str]:
    from xaibench.studies.validate.report import skipped_lines

    verdict = PASS if report.passed else FAIL
    summary = report.summary()
    lines = [f'<h2>Verdict: <span class="verdict-{verdict}">{verdict}</span> (exit status {report.exit_code})</h2>',
             "<p>One row per method and check: the worst sample's value, the tolerance and the verdict. The "
             "cascading randomization is one row per method: the level with the highest similarity, and the "
             "layer at which the map first changes enough (its similarity falls below the tolerance), or that "
             "it never does. Every row, every layer: verdict.csv, verdict.json, and the last section.</p>"]
    lines += _table(("method", "check", "value", "tolerance", "status", "detail"),
                    [((r.method, r.check, _number(r.value),
                       f"{r.comparison} {_number(r.tolerance)}" if r.tolerance is not None else "-", r.status,
                       r.detail), r.status) for r in summary if r.status != SKIPPED], numeric=(2,))
    skipped = skipped_lines(summary, report.settings.get("methods") or [], limit=None)
    if skipped:
        lines.append("<p>Skipped:</p><ul>" + "".join(f"<li>{_e(line.strip())}</li>" for line in skipped) + "</ul>")
    notes = report.notes()
    if notes:
        lines.append("<ul>" + "".join(f"<li>{_e(note)}</li>" for note in notes) + "</ul>")
    if report.metrics:
        lines += ["<h3>Evaluation metrics</h3>", f"<pre>{_e(chr(10).join(report.metrics_table()))}</pre>"]
    return lines


def _maps(report: Report) -> list[str]:
    """One image per method, backend (and input, for several inputs)."""
    arrays = report.inputs if isinstance(report.inputs, tuple) else (report.inputs,)
    several = isinstance(report.inputs, tuple)
    entries = []   # (method, backend, relevance of the first sample, a tuple for several inputs)
    for method, explanation in report.explanations.items():
        entries.append((method, "native", explanation.relevance))
        entries += [(m, backend, r) for (m, backend), r in report.backend_relevance.items() if m == method]
    if not entries or arrays[0] is None:
        return ["<h2>Relevance maps</h2>", "<p>No explanation to show.</p>"]
    drawn = {}
    for method, backend, relevance in entries:
        maps = relevance if isinstance(relevance, tuple) else (relevance,)
        for index, (array, values) in enumerate(zip(arrays, maps)):
            try:
                drawn[(method, backend, index)] = _first_map(values, array)
            except (ValueError, TypeError, IndexError) as error:   # a shape this page does not know
                drawn[(method, backend, index)] = (error, None, None, "")
    notes = sorted({note for _, _, _, note in drawn.values() if note})
    lines = ["<h2>Relevance maps</h2>",
             "<p>The first sample" + (f" ({'; '.join(_e(n) for n in notes)})" if notes else "")
             + "; red positive, blue negative; each map on its own symmetric scale (backends that disagree "
             "may differ by orders of magnitude; the agreement rows above say by how much).</p>"]
    for method in dict.fromkeys(m for m, _, _ in drawn):
        lines.append(f"<h3>{_e(method)}</h3><div>")
        for (m, backend, index), (values, dims, coords, _) in drawn.items():
            if m != method:
                continue
            name = f"{method}, {backend}" + (f", {arrays[index].name}" if several else "")
            if isinstance(values, Exception):   # a map that cannot be drawn must not cost the verdict files
                lines.append(f"<p>{_e(name)}: cannot draw the map: {_e(type(values).__name__)}: {_e(values)}</p>")
                continue
            finite = np.abs(values[np.isfinite(values)])
            limit = float(finite.max()) if finite.size else 0.0
            figure = _map_figure(values, dims, coords, limit if limit > 0 else 1.0, name)
            lines.append(f"<figure>{_image(figure, 'relevance map: ' + name)}<figcaption>{_e(name)}"
                         "</figcaption></figure>")
        lines.append("</div>")
    return lines


def _first_map(relevance, array):
    """The first sample's (and first target's) map on the input file's dimensions, reduced to at
    most two: (values, dims, coordinates per dim or None, note on what was reduced)."""
    values = relevance.detach().to(torch.float64).cpu().numpy() if torch.is_tensor(relevance) else np.asarray(
        relevance, dtype=np.float64)
    sample_shape = tuple(array.shape[1:])
    values = values.reshape((values.shape[0], -1) + sample_shape)
    note = "first target" if values.shape[1] > 1 else ""
    values, dims = values[0, 0], [str(d) for d in array.dims[1:]]
    reduced = []
    while values.ndim > 2:   # channels and other leading dimensions: summed
        reduced.append(dims.pop(0))
        values = values.sum(0)
    if reduced:
        note = ", ".join(filter(None, [note, "summed over " + ", ".join(reduced)]))
    coords = [np.asarray(array[d].values) if d in array.coords else None for d in dims]
    return values, dims, coords, note


def _map_figure(values, dims, coords, limit, title):
    from xaibench.studies.report.figures import RELEVANCE_COLORMAP, new_figure

    figure = new_figure(2.8, 2.3)
    axes = figure.add_subplot()
    axes.set_title(title, fontsize=8)
    axes.tick_params(labelsize=6)
    if values.ndim == 2 and min(values.shape) <= MAX_LINES < max(values.shape):   # a few rows: lines
        if values.shape[0] > values.shape[1]:
            values, dims, coords = values.T, dims[::-1], coords[::-1]
        x = coords[1] if coords[1] is not None and np.issubdtype(coords[1].dtype, np.number) else np.arange(
            values.shape[1])
        for row, line in enumerate(values):
            label = f"{dims[0]} {coords[0][row] if coords[0] is not None else row}"
            axes.plot(x, line, linewidth=1, label=label)
        axes.legend(fontsize=5)
        axes.axhline(0, color="0.6", linewidth=0.5)
        axes.set_xlabel(dims[1], fontsize=7)
        axes.set_ylim(-1.05 * limit, 1.05 * limit)
    elif values.ndim <= 1:
        values = values.reshape(-1)
        x = np.arange(values.size)
        if values.size <= 32:
            axes.bar(x, values, color=np.where(values >= 0, "#c62828", "#1f5fa8"))
        else:
            axes.plot(x, values, linewidth=1, color="#333")
        axes.axhline(0, color="0.6", linewidth=0.5)
        axes.set_xlabel(dims[0] if dims else "feature", fontsize=7)
        axes.set_ylim(-1.05 * limit, 1.05 * limit)
    else:
        values = _downsample(values)
        origin = "lower" if any(k in dims[0].lower() for k in ("lat", "south", "north")) else "upper"
        image = axes.imshow(values, cmap=RELEVANCE_COLORMAP, vmin=-limit, vmax=limit, origin=origin,
                            interpolation="nearest", aspect="auto")
        axes.set_ylabel(dims[0], fontsize=7)
        axes.set_xlabel(dims[1], fontsize=7)
        colorbar = figure.colorbar(image, ax=axes, shrink=0.8)
        colorbar.ax.tick_params(labelsize=6)
    return figure


def _downsample(values):
    """Block means so that neither side exceeds MAX_PIXELS (the last partial block dropped)."""
    factor = math.ceil(max(values.shape) / MAX_PIXELS)
    if factor <= 1:
        return values
    rows, columns = (values.shape[0] // factor) or 1, (values.shape[1] // factor) or 1
    factor_rows, factor_columns = min(factor, values.shape[0]), min(factor, values.shape[1])
    trimmed = values[: rows * factor_rows, : columns * factor_columns]
    return trimmed.reshape(rows, factor_rows, columns, factor_columns).mean(axis=(1, 3))


def _randomization(report: Report) -> list[str]:
    from xaibench.studies.report.figures import new_figure

    layers = list(report.settings.get("layers_top_down") or [])
    curves = {}
    for check in report.checks:
        if check.check.startswith("randomization[top "):
            level = int(check.check[len("randomization[top "):-1])
            curves.setdefault(check.method, {})[level] = check
    lines = ["<h2>Cascading randomization</h2>"]
    if not curves:
        return lines + ["<p>No layer was re-initialized (see the table above).</p>"]
    levels = max(max(c) for c in curves.values())
    tolerance = next(c.tolerance for curve in curves.values() for c in curve.values() if c.tolerance is not None)
    lines.append("<p>The top k parameterized layers re-initialized (cascading from the output down), the same "
                 "output explained again: Spearman correlation of |relevance| with the original map, worst sample. "
                 f"A map that shows what the model learned falls below {_e(_number(tolerance))} "
                 "(Adebayo et al. 2018).</p>")
    figure = new_figure(max(5.0, min(12.0, 0.18 * levels + 3)), 3.4)
    axes = figure.add_subplot()
    for number, (method, curve) in enumerate(curves.items()):   # markers and dashes: equal curves stay visible
        ks = sorted(curve)
        axes.plot(ks, [np.nan if curve[k].value is None else curve[k].value for k in ks],
                  marker=_MARKERS[number % len(_MARKERS)], markersize=4, fillstyle="none",
                  linestyle=_DASHES[number % len(_DASHES)], linewidth=1.2, label=method)
    axes.axhline(tolerance, color="0.3", linestyle="--", linewidth=0.8, label=f"tolerance {_number(tolerance)}")
    step = max(1, math.ceil(levels / 40))
    ticks = list(range(1, levels + 1, step))
    axes.set_xticks(ticks)
    axes.set_xticklabels([f"{k}: {layers[k - 1]}" if k <= len(layers) else str(k) for k in ticks], rotation=90,
                         fontsize=6)
    axes.set_xlabel("top layers re-initialized (number, and the deepest of them)", fontsize=7)
    axes.set_ylabel("Spearman(|R|, |R randomized|)", fontsize=7)
    axes.set_ylim(min(-0.05, axes.get_ylim()[0]), 1.05)
    axes.tick_params(axis="y", labelsize=6)
    axes.legend(fontsize=6)
    lines.append(_image(figure, "randomization curve"))
    methods = list(curves)
    rows = [((k, layers[k - 1] if k <= len(layers) else "?",
              *(_number(curves[m][k].value) if k in curves[m] else "-" for m in methods)), None)
            for k in range(1, levels + 1)]
    lines += ["<details><summary>Similarity per layer</summary>",
              *_table(("top k", "deepest layer re-initialized", *methods), rows,
                      numeric=tuple(range(2, 2 + len(methods)))), "</details>"]
    return lines


def _ledger(report: Report) -> list[str]:
    """Per LRP method with a ledger: |relevance_out - relevance_in - absorbed| / |output| per layer
    (worst sample) and the absorbed share per layer (mean over samples)."""
    from xaibench.studies.report.figures import new_figure

    ledgers = {m: e for m, e in report.explanations.items() if getattr(e, "ledger", None) is not None
               and len(e.ledger)}
    lines = ["<h2>Ledger per layer</h2>"]
    if not ledgers:
        return lines + ["<p>No native LRP method was explained: no ledger.</p>"]
    lines.append("<p>Every layer of the native LRP explanation, from the output to the input: the conservation "
                 "residual |R<sub>out</sub> - R<sub>in</sub> - absorbed| / |output| (worst sample; exact zeros drawn "
                 "at 1e-20) and the share of the output the layer absorbs (biases, stabilizers, constants; mean "
                 "over samples). The whole ledger's closure is the conservation check above.</p>")
    figure = new_figure(max(5.0, min(12.0, 0.09 * max(len(e.ledger) for e in ledgers.values()) + 3)), 5.0)
    residual_axes, absorbed_axes = figure.subplots(2, 1, sharex=True)
    tables = []
    most = 0
    for number, (method, explanation) in enumerate(ledgers.items()):
        output = explanation.output.detach().to(torch.float64).cpu()
        scale = output.abs().clamp(min=torch.finfo(torch.float64).tiny)
        residual, absorbed, table = [], [], []
        for row in explanation.ledger:
            relative = (row.residual.detach().to(torch.float64).cpu().abs() / scale)
            share = row.absorbed.detach().to(torch.float64).cpu() / scale
            residual.append(max(float(relative.max()), 1e-20))
            absorbed.append(float(share.mean()))
            table.append(((row.layer, row.kind, row.rule, f"{_first(row.relevance_out):.6g}",
                           f"{_first(row.relevance_in):.6g}", f"{_first(row.absorbed):.6g}",
                           f"{float(relative.max()):.3g}"), None))
        order = range(1, len(residual) + 1)
        style = {"marker": _MARKERS[number % len(_MARKERS)], "markersize": 3, "fillstyle": "none",
                 "linestyle": _DASHES[number % len(_DASHES)], "linewidth": 1, "label": method}
        residual_axes.semilogy(order, residual, **style)
        absorbed_axes.plot(order, absorbed, **style)
        if len(residual) > most:
            most, names = len(residual), [row.layer for row in explanation.ledger]
        tables += [f"<details><summary>{_e(method)}: {len(table)} layers</summary>",
                   *_table(("layer", "kind", "rule", "R_out (sample 1)", "R_in (sample 1)", "absorbed (sample 1)",
                            "|residual| / |output| (worst sample)"), table, numeric=(3, 4, 5, 6)), "</details>"]
    tolerance = report.settings.get("tolerances", {}).get("conservation")
    if tolerance:
        residual_axes.axhline(tolerance, color="0.3", linestyle="--", linewidth=0.8,
                              label=f"conservation tolerance {_number(tolerance)}")
    residual_axes.set_ylabel("|residual| / |output|", fontsize=7)
    absorbed_axes.set_ylabel("absorbed / |output|", fontsize=7)
    absorbed_axes.axhline(0, color="0.6", linewidth=0.5)
    step = max(1, math.ceil(most / 60))
    ticks = list(range(1, most + 1, step))
    absorbed_axes.set_xticks(ticks)
    absorbed_axes.set_xticklabels([names[k - 1] for k in ticks], rotation=90, fontsize=5)
    absorbed_axes.set_xlabel("layer, from the output to the input (the longest ledger's names)", fontsize=7)
    for axes in (residual_axes, absorbed_axes):
        axes.tick_params(axis="y", labelsize=6)
    residual_axes.legend(fontsize=6)
    lines.append(_image(figure, "ledger: conservation residual per layer"))
    return lines + tables


def _first(values: torch.Tensor) -> float:
    """The first sample's (and first target's) value of a per-sample ledger sum."""
    return float(values.detach().to(torch.float64).reshape(-1)[0])


def _all_checks(report: Report) -> list[str]:
    """Every row of verdict.csv; a randomization row names its deepest re-initialized layer instead
    of listing all of them again (verdict.csv does)."""
    layers = list(report.settings.get("layers_top_down") or [])
    rows = []
    for c in report.checks:
        detail = c.detail
        if c.check.startswith("randomization[top ") and detail.startswith("re-initialized "):
            level = int(c.check[len("randomization[top "):-1])
            deepest = layers[level - 1] if level <= len(layers) else "?"
            rest = detail.partition("; ")[2].removeprefix("max over samples of Spearman(|R|, |R_randomized|)")
            detail = f"re-initialized down to {deepest}" + (f"; {rest.strip()}" if rest.strip() else "")
        rows.append(((c.method, c.check, _number(c.value),
                      f"{c.comparison} {_number(c.tolerance)}" if c.tolerance is not None else "-", c.status, detail),
                     c.status))
    return ["<h2>All checks</h2>", f"<details><summary>{len(rows)} rows (as verdict.csv)</summary>",
            *_table(("method", "check", "value", "tolerance", "status", "detail"), rows, numeric=(2,)), "</details>"]
