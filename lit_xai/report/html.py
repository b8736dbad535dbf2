"""The report's files: a self-contained HTML page (table, rank plot, per-family plots and example heatmaps embedded
as base64 PNGs) plus ``report.csv`` (one row per method × metric), ``samples.csv`` (per-image scores),
``pairwise.csv``, ``report.json`` and the PNGs. Figures are ``matplotlib.figure.Figure`` objects (no pyplot state,
no backend switch)."""

from __future__ import annotations

import base64
import csv
import html
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from jsonargparse import Namespace
from matplotlib.figure import Figure
from torch import Tensor, nn

from lit_xai.callbacks.summary import direction_arrow
from lit_xai.report.config import CONTROL, MethodSpec
from lit_xai.report.statistics import MetricReport
from lit_xai.storage import atomic_write_bytes, atomic_write_json

#: cell colours by rank: rank 1 (nothing significantly better) … worst
#: line styles of a metric's several curves (e.g. the randomisation cascade's SSIM and rank correlations)
LINE_STYLES = ("-", "--", ":", "-.")
RANK_COLOURS = ("#1a9850", "#91cf60", "#d9ef8b", "#fee08b", "#fc8d59", "#d73027")


def examples(model: nn.Module, dataset: Any, methods: list[MethodSpec], target_rule: str, count: int, device: str,
             seed: int, denormalize: Any, build: Callable[[MethodSpec], Any]) -> Figure:
    """Rows: the first ``count`` images; columns: the image and each method's map (channels summed by |·|), by the
    method ``build(spec)`` gives (:class:`lit_xai.report.methods.ReportMethods`)."""
    from lit_xai.report.cells import Chunk, batch

    data = batch(dataset, Chunk(0, 0, count))
    inputs = data["image"].to(device)
    with torch.no_grad():
        target = data["label"].long().to(device) if target_rule == "label" else model(inputs).argmax(1)
    fig = Figure(figsize=(1.6 * (len(methods) + 1), 1.6 * count))
    axes = fig.subplots(count, len(methods) + 1, squeeze=False)
    pixels = denormalize(inputs) if denormalize is not None else inputs
    for b in range(count):
        image = pixels[b].detach().cpu().permute(1, 2, 0).clamp(0, 1).numpy()
        axes[b, 0].imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray")
        axes[b, 0].set_title(f"class {int(target[b])}", fontsize=7)
    for column, spec in enumerate(methods, start=1):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            maps = build(spec)(model, inputs, target).detach().abs().sum(1).cpu()
        for b in range(count):
            axes[b, column].imshow(maps[b].numpy(), cmap="magma")
            if b == 0:
                axes[b, column].set_title(spec.display, fontsize=7)
    for ax in axes.flat:
        ax.set_axis_off()
    fig.tight_layout()
    return fig


def rank_plot(reports: list[MetricReport]) -> Figure:
    """Rank (1 = best, ties within noise) of every method on every ranked metric, one line per method."""
    ranked = [r for r in reports if r.ranks]
    fig = Figure(figsize=(max(4.0, 0.7 * len(ranked) + 2), 3.6))
    ax = fig.add_subplot()
    methods = list(ranked[0].ranks) if ranked else []
    for k, method in enumerate(methods):
        offset = (k - (len(methods) - 1) / 2) * 0.06  # ties stay visible
        ax.plot([i + offset for i in range(len(ranked))], [r.ranks[method] for r in ranked], marker="o", label=method)
    ax.set_xticks(range(len(ranked)), [f"{r.metric} {direction_arrow(r.higher_is_better)}" for r in ranked],
                  rotation=45, ha="right", fontsize=8)
    ax.invert_yaxis()
    ax.set_ylabel("rank (1 = best; ties: |Δ| ≤ 2 SE)")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    return fig


def family_plot(family: str, reports: list[MetricReport], scores: dict[str, dict[str, Tensor]],
                curves: dict[str, dict[str, Any]]) -> Figure:
    """Per metric of the family: each method's per-image scores (box) with the mean ± 2 SE; below, where the metric
    has curves (randomisation cascade, Sensitivity-N, EHR), each method's mean curve."""
    with_curves = [r for r in reports if r.metric in curves]
    fig = Figure(figsize=(3.2 * len(reports), 3.2 * (1 + bool(with_curves))))
    grid = fig.subplots(1 + bool(with_curves), len(reports), squeeze=False)
    axes = grid[0]
    for ax, report in zip(grid[-1] if with_curves else [], reports):
        if report.metric not in curves:
            ax.set_axis_off()
            continue
        entry = curves[report.metric]
        x = entry["axis"].numpy()
        names: list[str] = []
        for k, (method, named) in enumerate(entry["means"].items()):  # colour: method; line style: curve
            for name, y in named.items():
                names += [name] if name not in names else []
                style = LINE_STYLES[names.index(name) % len(LINE_STYLES)]
                ax.plot(x, y.numpy(), color=f"C{k}", linestyle=style, marker=".", ms=3,
                        label=method if names.index(name) == 0 else None)
        if entry["ticks"]:
            ax.set_xticks(x, entry["ticks"], rotation=90, fontsize=6)
        styles = ", ".join(f"{LINE_STYLES[i % len(LINE_STYLES)]} {n}" for i, n in enumerate(names))
        ax.set_title(f"{report.metric}: mean curve" + (f"\n({styles})" if len(names) > 1 else ""), fontsize=8)
        ax.legend(fontsize=6)
    for ax, report in zip(axes, reports):
        methods = list(scores[report.metric])
        data = [scores[report.metric][m].numpy() for m in methods]
        ax.boxplot(data, showfliers=False)
        for i, row in enumerate(report.rows, start=1):
            ax.errorbar(i, row.mean, yerr=2 * (row.se or 0.0), fmt="o", color="black", ms=3)
        ax.set_xticks(range(1, len(methods) + 1), methods, rotation=45, ha="right", fontsize=7)
        ax.set_title(f"{report.metric} {direction_arrow(report.higher_is_better)}", fontsize=9)
    fig.suptitle(family)
    fig.tight_layout()
    return fig


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def _img(data: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def table_rows(reports: list[MetricReport]) -> list[dict[str, Any]]:
    """One row per method × metric: mean, SE, CI, Δ vs control ± SE, verdict, rank."""
    rows = []
    for r in reports:
        for row in r.rows:
            low, high = r.ci.get(row.method, (None, None))
            rows.append({"family": r.family, "metric": r.metric, "direction": row.direction, "method": row.method,
                         "n": row.n, "mean": row.mean, "se": row.se, "ci_low": low, "ci_high": high,
                         "diff_vs_control": row.diff, "diff_se": row.diff_se, "verdict": row.verdict,
                         "rank": r.ranks.get(row.method)})
    return rows


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else ["empty"])
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(path, buffer.getvalue().encode())


def _cell(report: MetricReport, method: str) -> str:
    row = next(r for r in report.rows if r.method == method)
    rank = report.ranks.get(method)
    colour = RANK_COLOURS[min(rank - 1, len(RANK_COLOURS) - 1)] if rank else "#ffffff"
    mark = {"better": " ▲", "worse": " ▼"}.get(row.verdict, "")
    se = f" ± {row.se:.3g}" if row.se is not None else ""
    title = f"rank {rank}; Δ vs {CONTROL}: {row.diff} ± {row.diff_se} ({row.verdict})"
    return (f'<td style="background:{colour}" title="{html.escape(title)}">{row.mean:.4g}{se}{mark}'
            f'<br><small>rank {rank if rank else "–"}</small></td>')


def _pairs(report: MetricReport) -> str:
    wins = [html.escape(f"{d.a} > {d.b}" if d.a_better else f"{d.b} > {d.a}") for d in report.differences
            if d.a_better or d.b_better]
    return f"<li><b>{html.escape(report.metric)}</b>: {', '.join(wins) or 'none (all within noise)'}</li>"


def page(reports: list[MetricReport], figures: dict[str, bytes], external: dict[str, Any], cfg: Namespace) -> str:
    """The self-contained HTML page."""
    methods = [row.method for row in reports[0].rows] if reports else []
    head = "".join(f"<th>{html.escape(r.family)}<br>{html.escape(r.metric)} {direction_arrow(r.higher_is_better)}"
                   "</th>" for r in reports)
    body = "".join(f"<tr><th>{html.escape(m)}</th>{''.join(_cell(r, m) for r in reports)}</tr>" for m in methods)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>lit_xai report</title><style>"
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #999;"
        "padding:4px 8px;text-align:center;font-size:13px}img{max-width:100%}</style></head><body>",
        f"<h1>Attribution report card</h1><p>model {html.escape(str(cfg.model.name))} "
        f"({html.escape(str(cfg.model.weights))}), data {html.escape(str(cfg.data.class_path))}, split {cfg.split}, "
        f"{cfg.num_images} images, target = {cfg.target}, seed {cfg.seed}.</p>",
        "<h2>Method × metric</h2><p>mean ± SE over the same images; ↑/↓ higher/lower is better; ▲/▼ significantly "
        f"better/worse than the {CONTROL} control (paired |Δ| &gt; 2 SE); colour and rank: 1 + the number of methods "
        "significantly better (ties = differences within noise). On randomisation the control's map ignores the "
        "weights, so it keeps similarity 1 (the worst score): the floor every method must beat."
        + (" Axiom columns are over the stored scenes instead of images; on class_sensitivity_single and saturation "
           "(correlations across scenes) each scene's score is its jackknife pseudo-value, so the mean is the "
           "bias-corrected correlation (docs/report.md)." if any(r.family == "axioms" for r in reports) else "")
        + "</p>",
        f"<table><tr><th>method</th>{head}</tr>{body}</table>",
        "<h2>Significant differences between methods</h2><p>paired over the same images, |Δ| &gt; 2 SE; every pair "
        "with Δ ± SE is in pairwise.csv</p><ul>" + "".join(_pairs(r) for r in reports) + "</ul>",
        "<h2>Ranks</h2>" + _img(figures["rank"], "rank plot"),
        "<h2>Per family</h2>" + "".join(_img(v, k) for k, v in figures.items() if k.startswith("family_")),
        "<h2>Examples</h2>" + _img(figures["examples"], "example heatmaps"),
    ]
    for family, table in external.items():
        parts.append(f"<h2>{family}</h2>")
        if isinstance(table, str):
            parts.append(f"<p>{html.escape(table)}</p>")
        elif table:
            columns = list(table[0])
            parts.append("<table><tr>" + "".join(f"<th>{html.escape(str(c))}</th>" for c in columns) + "</tr>"
                         + "".join("<tr>" + "".join(f"<td>{html.escape(str(row.get(c, '')))}</td>" for c in columns)
                                   + "</tr>" for row in table) + "</table>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_outputs(root: Path, reports: list[MetricReport], scores: dict[str, dict[str, Tensor]],
                  index: dict[str, Tensor],
                  curves: dict[str, dict[str, Any]], examples_figure: Figure, external: dict[str, Any],
                  cfg: Namespace) -> dict[str, Path]:
    """Write report.html, report.csv/json, samples.csv, pairwise.csv and the PNGs into ``root``; ``index``: metric →
    the image indices (or, for the axiom family, the scene ids) its scores are in the order of."""
    figures = {"rank": _png(rank_plot(reports)), "examples": _png(examples_figure)}
    for family in dict.fromkeys(r.family for r in reports):
        members = [r for r in reports if r.family == family]
        figures[f"family_{family}"] = _png(family_plot(family, members, scores, curves))
    for name, data in figures.items():
        atomic_write_bytes(root / f"{name}.png", data)
    rows = table_rows(reports)
    _write_csv(root / "report.csv", rows)
    _write_csv(root / "pairwise.csv", [d.as_dict() for r in reports for d in r.differences])
    _write_csv(root / "samples.csv", [
        {"family": r.family, "metric": r.metric, "method": m, "index": int(i), "score": float(v)}
        for r in reports for m, values in scores[r.metric].items() for i, v in zip(index[r.metric], values)
    ])
    atomic_write_json(root / "report.json", {"rows": rows, "pairwise": [d.as_dict() for r in reports
                                                                       for d in r.differences],
                                             "external": external})
    atomic_write_bytes(root / "report.html", page(reports, figures, external, cfg).encode())
    return {"html": root / "report.html", "csv": root / "report.csv", "json": root / "report.json",
            "rank_png": root / "rank.png"}
