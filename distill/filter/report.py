"""`distill report`: one self-contained HTML page describing a `distill filter` output folder.

The folder may hold millions of rows, so only the columns a plot needs are read, one row group at a time, and
the values behind histograms are a uniform random sample of at most HIST_CAP rows per side (kept, rejected).
Everything that comes from the data is HTML-escaped: traces are model-written and may contain markup or script.
Plots are PNG files rendered with matplotlib's Agg canvas and embedded as base64, so the page needs no other file.
"""

import base64
import html
import io
import json
import os
import random
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from distill.errors import DistillError, MissingDependency
from distill.io import check_not_input, data_files, write_text_atomic

REPORT_NAME = "report.html"
HIST_CAP = 100_000  # values per histogram side; a uniform sample beyond that
SAMPLE_ROWS = 4  # rows shown for kept and for rejected
SAMPLE_FILES = 3  # files the shown rows are drawn from (a few reads, never a scan)
SAMPLE_BATCH = 256  # rows read from each of those files
SEED = 0  # the same folder always gives the same page
# How much of each field a shown row keeps; the rest is summarised as "(N more characters)".
TEXT_LIMITS = {"problem": 600, "gold": 200, "reasoning": 1500, "answer": 600, "details": 300, "filter_reason": 200}
SAMPLE_COLUMNS = ["id", "prompt_id", "domain", "problem", "gold", "reasoning", "answer", "completion_tokens"]


class Reservoir:
    """A uniform random sample of at most `cap` values from a stream of arrays.

    Every value gets a random key and the `cap` smallest keys win (bottom-k sampling). Trimming waits until the
    buffer holds twice the cap, so thousands of small row groups do not each pay for a partition of 100k values.
    """

    def __init__(self, cap: int, seed: int):
        self.cap = cap
        self.rng = np.random.default_rng(seed)
        self._values = np.empty(0, dtype=np.float64)
        self._keys = np.empty(0, dtype=np.float64)
        self.seen = 0

    def add(self, values: np.ndarray) -> None:
        if len(values) == 0:
            return
        self.seen += len(values)
        self._values = np.concatenate([self._values, values.astype(np.float64)])
        self._keys = np.concatenate([self._keys, self.rng.random(len(values))])
        if len(self._values) > 2 * self.cap:
            self._trim()

    def _trim(self) -> None:
        if len(self._values) > self.cap:
            keep = np.argpartition(self._keys, self.cap)[: self.cap]
            self._values, self._keys = self._values[keep], self._keys[keep]

    @property
    def values(self) -> np.ndarray:
        self._trim()
        return self._values


# -- reading ----------------------------------------------------------------------------------------------------


def load_stats(folder: Path) -> dict:
    """stats.json of a filter output, or a DistillError that says what the folder is instead."""
    if not folder.is_dir():
        raise DistillError(f"folder not found: {folder}")
    path = folder / "stats.json"
    if not path.is_file():
        raise DistillError(
            f"{folder} is not a `distill filter` output: it has no stats.json (a filter run writes it last)"
        )
    try:
        stats = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DistillError(f"{path} is unreadable ({exc}): rerun `distill filter` to rewrite it") from None
    if not isinstance(stats, dict) or "total" not in stats or "kept" not in stats:
        raise DistillError(
            f"{folder} is not a `distill filter` output: its stats.json has no `total` and `kept` counts "
            "(a `distill generate` folder must go through `distill filter` first)"
        )
    if not (folder / "data").is_dir() and not (folder / "rejected").is_dir():
        raise DistillError(f"{folder} is not a `distill filter` output: it has neither data/ nor rejected/")
    return stats


def open_parquet(path: Path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for damaged files
        raise DistillError(f"{path} is unreadable ({exc}): delete it or rerun `distill filter`") from None


def read_row_group(pf: pq.ParquetFile, path: Path, index: int, columns: list[str]):
    try:
        return pf.read_row_group(index, columns=columns)
    except Exception as exc:  # noqa: BLE001 - a damaged file is reported by name
        raise DistillError(f"{path} is unreadable ({exc}): delete it or rerun `distill filter`") from None


def scan(files: list[Path]) -> tuple[Reservoir, Reservoir | None, int]:
    """Lengths (completion tokens, else words of reasoning) and judge scores of the rows, plus the row count."""
    lengths = Reservoir(HIST_CAP, SEED)
    scores: Reservoir | None = None
    rows = 0
    for path in files:
        pf = open_parquet(path)
        names = set(pf.schema_arrow.names)
        rows += pf.metadata.num_rows
        if "verdict_judge" in names and scores is None:
            scores = Reservoir(HIST_CAP, SEED + 1)
        for i in range(pf.metadata.num_row_groups):
            if "completion_tokens" in names:
                column = read_row_group(pf, path, i, ["completion_tokens"]).column(0)
                values = column.to_numpy(zero_copy_only=False).astype(np.float64)  # nulls become NaN
            else:
                values = np.full(pf.metadata.row_group(i).num_rows, np.nan)
            missing = np.flatnonzero(np.isnan(values))
            if len(missing) and "reasoning" in names:
                # Only row groups with missing token counts pay for reading the (large) reasoning column.
                reasoning = read_row_group(pf, path, i, ["reasoning"]).column(0)
                for j in missing:
                    text = reasoning[int(j)].as_py()
                    if text is not None:
                        values[j] = len(text.split())
            lengths.add(values[~np.isnan(values)])
            if "verdict_judge" in names:
                # Only the score field of the struct is read, not the verdict details.
                column = read_row_group(pf, path, i, ["verdict_judge.score"]).column(0)
                score = pc.struct_field(column, "score").to_numpy(zero_copy_only=False).astype(np.float64)
                scores.add(score[~np.isnan(score)])
    return lengths, scores, rows


def sample_rows(files: list[Path], rng: random.Random) -> list[dict]:
    """A few rows to show, from the first batch of a few randomly chosen files."""
    pool: list[dict] = []
    for path in rng.sample(files, min(SAMPLE_FILES, len(files))):
        pf = open_parquet(path)
        names = pf.schema_arrow.names
        columns = [c for c in SAMPLE_COLUMNS if c in names]
        columns += [c for c in names if c.startswith("verdict_")] + [c for c in ("filter_reason",) if c in names]
        try:
            batch = next(pf.iter_batches(batch_size=SAMPLE_BATCH, columns=columns), None)
        except Exception as exc:  # noqa: BLE001 - a damaged file is reported by name
            raise DistillError(f"{path} is unreadable ({exc}): delete it or rerun `distill filter`") from None
        if batch is not None:
            pool.extend(batch.to_pylist())
    return rng.sample(pool, min(SAMPLE_ROWS, len(pool)))


def verifier_names(files: list[Path]) -> list[str]:
    names: set[str] = set()
    for path in files[:1]:  # every file of one run has the same schema
        names.update(c[len("verdict_") :] for c in open_parquet(path).schema_arrow.names if c.startswith("verdict_"))
    return sorted(names)


# -- plots ------------------------------------------------------------------------------------------------------


def _figure(height: float = 3.2):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # ~1 s to import; only for the report's plots
        from matplotlib.figure import Figure  # ~1 s to import; only for the report's plots
    except ImportError as exc:
        raise MissingDependency("matplotlib", "pip install matplotlib") from exc
    # A Figure on its own Agg canvas: no pyplot, so no global backend switch and no figure kept alive.
    fig = Figure(figsize=(7, height))
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96, bbox_inches="tight")
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="plot" src="data:image/png;base64,{data}">'


def _plot_context():
    import matplotlib  # ~1 s to import; only for the report's plots

    # Labels come from the data (verifier, domain, reason names): a `$` must not be read as mathtext.
    return matplotlib.rc_context({"text.parse_math": False})


def bar_plot(values: dict, title: str, xlabel: str, percent: bool = False) -> str:
    items = sorted(values.items(), key=lambda kv: kv[1], reverse=True)
    with _plot_context():
        fig, ax = _figure(max(1.6, 0.4 * len(items) + 1.0))
        labels = [str(k) for k, _ in items][::-1]
        numbers = [float(v) * (100 if percent else 1) for _, v in items][::-1]
        ax.barh(labels, numbers, color="#4c72b0")
        for y, n in enumerate(numbers):
            ax.text(n, y, f" {n:.1f}%" if percent else f" {n:,.0f}", va="center", fontsize=8)
        if percent:
            ax.set_xlim(0, 110)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        return _png(fig)


def pass_rate_plot(histogram: dict, window: str | None) -> str:
    """Prompts per pass-rate bucket, in bucket order (0 = never solved, 1 = always): the difficulty spread."""
    labels, counts = list(histogram), [int(v) for v in histogram.values()]
    with _plot_context():
        fig, ax = _figure()
        ax.bar(labels, counts, color="#4c72b0")
        for x, n in enumerate(counts):
            ax.text(x, n, f"{n:,}", ha="center", va="bottom", fontsize=8)
        title = "Prompts by pass rate" + (f" (kept window {window})" if window else "")
        ax.set_title(title)
        ax.set_xlabel("share of a prompt's samples that passed")
        ax.set_ylabel("prompts")
        return _png(fig)


def length_plot(kept: Reservoir, rejected: Reservoir) -> str:
    with _plot_context():
        fig, ax = _figure()
        both = np.concatenate([kept.values, rejected.values])
        bins = np.linspace(0, float(both.max()) or 1.0, 41)
        for res, label, color in ((kept, "kept", "#55a868"), (rejected, "rejected", "#c44e52")):
            if len(res.values):
                ax.hist(res.values, bins=bins, alpha=0.55, density=True, color=color, label=f"{label} ({res.seen:,})")
        ax.set_title("Reasoning length, kept vs rejected")
        ax.set_xlabel("completion tokens (words of reasoning where the count is missing)")
        ax.set_ylabel("share of rows")
        ax.legend()
        return _png(fig)


def score_plot(kept: Reservoir | None, rejected: Reservoir | None) -> str:
    with _plot_context():
        fig, ax = _figure()
        bins = np.arange(0.5, 11.5, 1.0)
        data, labels, colors = [], [], []
        for res, label, color in ((kept, "kept", "#55a868"), (rejected, "rejected", "#c44e52")):
            if res is not None and len(res.values):
                data.append(res.values)
                labels.append(f"{label} ({res.seen:,} scored)")
                colors.append(color)
        ax.hist(data, bins=bins, stacked=True, color=colors, label=labels)
        ax.set_xticks(range(1, 11))
        ax.set_title("Judge scores (grading mode)")
        ax.set_xlabel("score")
        ax.set_ylabel("rows")
        ax.legend()
        return _png(fig)


# -- HTML -------------------------------------------------------------------------------------------------------

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
td, th { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
pre { white-space: pre-wrap; word-break: break-word; background: #f8f8f8; padding: 0.5em; margin: 0; }
.sample { border: 1px solid #ddd; border-radius: 4px; padding: 0.5em 1em; margin: 1em 0; }
.muted { color: #777; }
img { max-width: 100%; }
"""


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit:,} more characters)"


def fmt(value) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def table(rows: list[tuple], header: tuple | None = None) -> str:
    out = ["<table>"]
    if header:
        out.append("<tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>")
    for row in rows:
        out.append("<tr>" + "".join(f"<td>{esc(fmt(c))}</td>" for c in row) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def rate_table(rates: dict) -> str:
    return table([(k, f"{float(v) * 100:.1f}%") for k, v in sorted(rates.items())], ("name", "pass rate"))


def summary_section(stats: dict) -> str:
    total, kept = stats.get("total") or 0, stats.get("kept") or 0
    rows: list[tuple] = [("total", total), ("kept", kept), ("rejected", total - kept)]
    if total:
        rows.append(("keep rate", f"{kept / total * 100:.1f}%"))
    nested = []
    for key, value in stats.items():
        if key in ("total", "kept") or key.startswith("dropped_"):
            continue
        if isinstance(value, dict):
            nested.append((key, value))
        elif isinstance(value, list):
            rows.append((key, json.dumps(value)[:300]))
        else:
            rows.append((key, value))
    parts = ["<h2>Summary</h2>", table(rows, ("stat", "value"))]
    for key, value in nested:
        parts.append(f"<h3>{esc(key)}</h3>")
        if key.startswith("pass_rate") and all(isinstance(v, int | float) for v in value.values()):
            parts.append(rate_table(value))
        else:
            parts.append(
                table([(k, v if not isinstance(v, dict | list) else json.dumps(v)) for k, v in value.items()])
            )
    drops = drop_counts(stats)
    if drops:
        parts.append("<h3>Drop reasons</h3>")
        parts.append(table(sorted(drops.items(), key=lambda kv: -kv[1]), ("reason", "rows")))
    return "\n".join(parts)


def drop_counts(stats: dict) -> dict:
    return {
        k[len("dropped_") :]: v
        for k, v in stats.items()
        if k.startswith("dropped_") and isinstance(v, int | float) and not isinstance(v, bool)
    }


def verdict_html(name: str, verdict) -> str:
    if not verdict:
        return f"<li><b>{esc(name)}</b>: <span class='muted'>not checked</span></li>"
    parts = [f"passed={verdict.get('passed')}", f"reason={verdict.get('reason')}"]
    if verdict.get("score") is not None:
        parts.append(f"score={fmt(verdict['score'])}")
    text = esc(", ".join(parts))
    if verdict.get("details"):
        text += f"<pre>{esc(truncate(str(verdict['details']), TEXT_LIMITS['details']))}</pre>"
    return f"<li><b>{esc(name)}</b>: {text}</li>"


def sample_html(row: dict) -> str:
    head = ", ".join(f"{k}={row[k]}" for k in ("id", "prompt_id", "domain", "completion_tokens") if k in row)
    out = ['<div class="sample">', f"<p class='muted'>{esc(head)}</p>"]
    if row.get("filter_reason") is not None:
        reason = truncate(str(row["filter_reason"]), TEXT_LIMITS["filter_reason"])
        out.append(f"<p><b>filter_reason</b>: {esc(reason)}</p>")
    for field in ("problem", "gold", "reasoning", "answer"):
        if row.get(field) is not None:
            out.append(f"<p><b>{field}</b></p><pre>{esc(truncate(str(row[field]), TEXT_LIMITS[field]))}</pre>")
    verdicts = [(k[len("verdict_") :], v) for k, v in row.items() if k.startswith("verdict_")]
    if verdicts:
        out.append("<p><b>verdicts</b></p><ul>" + "".join(verdict_html(n, v) for n, v in verdicts) + "</ul>")
    out.append("</div>")
    return "\n".join(out)


def samples_section(title: str, rows: list[dict], total: int) -> str:
    parts = [f"<h2>{esc(title)}</h2>"]
    if not rows:
        parts.append("<p class='muted'>No rows.</p>")
    else:
        parts.append(f"<p class='muted'>{len(rows)} random rows of {total:,}.</p>")
        parts.extend(sample_html(r) for r in rows)
    return "\n".join(parts)


def write_report(folder: str | os.PathLike) -> Path:
    """Write `<folder>/report.html` for a `distill filter` output folder and return its path."""
    folder = Path(folder)
    stats = load_stats(folder)
    kept_files, rejected_files = data_files(folder / "data"), data_files(folder / "rejected")
    # The page is the one thing written: it may not be (a link to) a file it describes.
    check_not_input(folder / REPORT_NAME, [*kept_files, *rejected_files, folder / "stats.json"], flag="the report")
    kept_lengths, kept_scores, kept_rows = scan(kept_files)
    rejected_lengths, rejected_scores, rejected_rows = scan(rejected_files)
    rng = random.Random(SEED)
    kept_samples, rejected_samples = sample_rows(kept_files, rng), sample_rows(rejected_files, rng)

    plots: list[tuple[str, str]] = []  # (caption, <img>)
    pass_rate = stats.get("pass_rate")
    if isinstance(pass_rate, dict) and pass_rate:
        caption = "Pass rate per verifier"
        plots.append((caption, bar_plot(pass_rate, caption, "rows passed (%)", percent=True)))
    by_domain = stats.get("pass_rate_by_domain")
    if isinstance(by_domain, dict) and by_domain:
        caption = "Pass rate per domain"
        plots.append((caption, bar_plot(by_domain, caption, "rows kept (%)", percent=True)))
    histogram = stats.get("prompt_pass_rate_histogram")
    if isinstance(histogram, dict) and isinstance(histogram.get("all"), dict) and sum(histogram["all"].values()):
        caption = "Prompts by pass rate"
        plots.append((caption, pass_rate_plot(histogram["all"], stats.get("pass_rate_window"))))
    gold_source = stats.get("gold_source")
    if isinstance(gold_source, dict) and gold_source.get("majority"):
        caption = "Where the gold came from (rows)"
        plots.append((caption, bar_plot(gold_source, caption, "rows")))
    if len(kept_lengths.values) or len(rejected_lengths.values):
        plots.append(("Reasoning length, kept vs rejected", length_plot(kept_lengths, rejected_lengths)))
    scored = [r for r in (kept_scores, rejected_scores) if r is not None and len(r.values)]
    if scored:
        plots.append(("Judge scores", score_plot(kept_scores, rejected_scores)))
    drops = drop_counts(stats)
    if drops:
        plots.append(("Drop reasons", bar_plot(drops, "Drop reasons", "rows")))

    verifiers = verifier_names(kept_files or rejected_files)
    title = f"distill filter report: {folder.resolve().name}"
    body = [
        f"<h1>{esc(title)}</h1>",
        f"<p class='muted'>{kept_rows:,} kept rows in {len(kept_files)} file(s), {rejected_rows:,} rejected rows "
        f"in {len(rejected_files)} file(s); verifiers: {esc(', '.join(verifiers) or 'none')}. Histograms use a "
        f"random sample of at most {HIST_CAP:,} rows per side.</p>",
        summary_section(stats),
        "<h2>Plots</h2>",
        "\n".join(f"<figure>{img}<figcaption>{esc(cap)}</figcaption></figure>" for cap, img in plots)
        or "<p class='muted'>Nothing to plot.</p>",
        samples_section("Kept samples", kept_samples, kept_rows),
        samples_section("Rejected samples", rejected_samples, rejected_rows),
    ]
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
    out = folder / REPORT_NAME
    # Written under a temporary name and renamed: a reader never sees half a page, and a link planted under the
    # report's name is replaced, never written through (it could point at the data the page describes).
    write_text_atomic(page, out, durable=False)
    return out
