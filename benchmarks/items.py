"""The result items of benchmarks/run.py, `{"name", "ours", "baseline", "unit", "ratio", "target", "met"}`, and
the table they print as."""


def item(name: str, ours: float, baseline: float, unit: str, target: str | None) -> dict:
    """One line of the table; `target` is ">= X" or "<= X" on the ratio, or None for an informational line."""
    ratio = ours / baseline if baseline else float("inf")
    met = None
    if target is not None:
        op, value = target.split()
        met = ratio >= float(value) if op == ">=" else ratio <= float(value)
    return {
        "name": name,
        "ours": round(ours, 4),
        "baseline": round(baseline, 4),
        "unit": unit,
        "ratio": round(ratio, 3),
        "target": target,
        "met": met,
    }


def format_table(items: list[dict]) -> str:
    header = ("benchmark", "ours", "baseline", "unit", "ratio", "target", "met")
    lines = [header] + [
        (i["name"], f"{i['ours']:g}", f"{i['baseline']:g}", i["unit"], f"{i['ratio']:.3g}", i["target"] or "-",
         {True: "yes", False: "NO", None: "-"}[i["met"]])
        for i in items
    ]  # fmt: skip
    widths = [max(len(str(row[c])) for row in lines) for c in range(len(header))]
    return "\n".join("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in lines)
