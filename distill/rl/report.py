"""report.html for a `distill rl` folder (reward per function, pass rate, completion length and KL by step), and the
same page of curves for `distill train --method opd` (write_curves).

PNG plots (matplotlib's Agg canvas) embedded as base64, so the page is one file, like `distill report`.
"""

import base64
import html
import io
import json
from pathlib import Path

from distill.errors import DistillError

REPORT_NAME = "report.html"


def read_log(folder: Path, name: str = "rewards.jsonl", command: str = "distill rl") -> list[dict]:
    path = folder / name
    if not path.is_file():
        raise DistillError(f"{folder} holds no {name}: run `{command}` into it first")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _plot(rows: list[dict], keys: list[str], title: str) -> str:
    import matplotlib  # ~1 s to import; only for the report's plots

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # ~1 s to import; only for the report's plots

    fig, ax = plt.subplots(figsize=(6, 3.2))
    for key in keys:
        points = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
        if points:
            ax.plot(*zip(*points, strict=True), marker=".", label=key)
    ax.set_title(title)
    ax.set_xlabel("step")
    if len(keys) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return f'<img alt="{html.escape(title)}" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def write_report(folder: Path) -> Path:
    rows = read_log(folder)
    reward_keys = ["reward"] + sorted({k for r in rows for k in r if k.startswith("reward_")})
    plots = [
        (reward_keys, "mean reward (total is weighted)"),
        (["pass_rate"], "pass rate"),
        (["completion_length"], "mean completion length (tokens)"),
        (["kl"], "KL to the reference"),
    ]
    return write_curves(folder, rows, "distill rl", plots)


def write_curves(folder: Path, rows: list[dict], title: str, plots: list[tuple[list[str], str]]) -> Path:
    """folder/report.html: one plot per (keys, title) of the per-step `rows`, and the last step's values (the
    page of `distill rl` and of `distill train --method opd`)."""
    parts = [f"<h1>{html.escape(title)}: {html.escape(folder.name)}</h1>", f"<p>{len(rows)} logged steps.</p>"]
    parts += [_plot(rows, keys, plot_title) for keys, plot_title in plots]
    if rows:
        last = rows[-1]
        cells = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>" for k, v in last.items())
        parts.append(f"<h2>last step</h2><table>{cells}</table>")
    page = f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title><body>" + "\n".join(parts)
    path = folder / REPORT_NAME
    path.write_text(page + "</body>")
    return path
