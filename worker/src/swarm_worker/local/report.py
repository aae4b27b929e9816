"""What `swarm run` leaves behind: summary.json, curves.png, and the console progress and table.

A task's metric (swarm_worker.training.tasks.task_metric) decides what is shown: test loss and
accuracy, or for a language model (`perplexity`) the validation loss, its perplexity exp(loss) and
the next-byte accuracy; summary.json then also holds `final_perplexity`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from swarm_worker.training.tasks import Metric


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def perplexity(loss: float | None) -> float | None:
    """exp(loss) for a loss in nats; None when there is no loss, inf past float range."""
    if loss is None:
        return None
    return math.exp(loss) if loss < 700 else math.inf


def progress_line(line: dict[str, Any], rounds: int, metric: Metric = "accuracy") -> str:
    acc = line.get("accuracy")
    acc_s = f"{100 * acc:5.1f}%" if acc is not None else "   -  "
    loss = line.get("testLoss")
    loss_s = f"{loss:.4f}" if loss is not None else "-"
    if metric == "perplexity":
        ppl = perplexity(loss)
        scores = f"val loss {loss_s}  ppl {ppl:.2f}  " if ppl is not None else "val loss -  ppl -  "
        scores += f"next-byte acc {acc_s}"
    else:
        scores = f"test loss {loss_s}  acc {acc_s}"
    return (
        f"round {line['round']:>4}/{rounds}  {scores}  "
        f"workers {line['workers']}  sent {human_bytes(line['bytesSent'])}  "
        f"{line['samplesPerSecond']:,.0f} samples/s  {line['wallSeconds']:.1f}s"
    )


def summarize(
    result: dict[str, Any], lines: list[dict[str, Any]], metric: Metric = "accuracy"
) -> dict[str, Any]:
    sent = int(result["bytesSent"])
    dense = int(result["denseEquivalentBytes"])
    scores: dict[str, Any] = {
        "metric": metric,
        "final_accuracy": result["accuracy"],
        "final_loss": result["loss"],
    }
    if metric == "perplexity":
        scores["final_perplexity"] = perplexity(result["loss"])
    return {
        "job": result["job"],
        "phase": result["phase"],
        **scores,
        "rounds": result["round"],
        "wall_seconds": result["wallSeconds"],
        "bytes_sent": sent,
        "dense_equivalent_bytes": dense,
        "compression_ratio": dense / sent if sent else None,
        "samples_per_second": (
            sum(line["samples"] for line in lines) / lines[-1]["wallSeconds"] if lines else 0.0
        ),
        "restarts": result.get("restarts", {}),
        "dropped": result.get("dropped", {}),
        "nodes": result["nodes"],
    }


def write_outputs(output: Path, summary: dict[str, Any], lines: list[dict[str, Any]]) -> None:
    (output / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot_curves(output / "curves.png", lines)


def plot_curves(path: Path, lines: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    evaluated = [x for x in lines if x.get("accuracy") is not None]
    rounds = [x["round"] for x in evaluated]
    mbytes = [x["bytesSent"] / 1e6 for x in evaluated]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    for col, (xs, label) in enumerate(((rounds, "round"), (mbytes, "MB sent"))):
        axes[0][col].plot(xs, [x["testLoss"] for x in evaluated], marker=".")
        axes[0][col].set_ylabel("test loss")
        axes[1][col].plot(xs, [100 * x["accuracy"] for x in evaluated], marker=".", color="tab:green")
        axes[1][col].set_ylabel("test accuracy (%)")
        axes[1][col].set_xlabel(label)
        for row in axes:
            row[col].grid(alpha=0.3)
    fig.suptitle("ncrsh-swarm: loss and accuracy against rounds and bytes")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def print_summary(console: Console, summary: dict[str, Any]) -> None:
    table = Table(title=f"swarm run: {summary['job']}", show_header=False)
    table.add_column("metric")
    table.add_column("value", justify="right")
    acc, loss = summary["final_accuracy"], summary["final_loss"]
    language_model = summary.get("metric") == "perplexity"
    if language_model:
        table.add_row("final validation loss", f"{loss:.4f}" if loss is not None else "-")
        ppl = summary.get("final_perplexity")
        table.add_row("final perplexity", f"{ppl:.2f}" if ppl is not None else "-")
    table.add_row(
        "final next-byte accuracy" if language_model else "final test accuracy",
        f"{100 * acc:.2f}%" if acc is not None else "-",
    )
    if not language_model:
        table.add_row("final test loss", f"{loss:.4f}" if loss is not None else "-")
    table.add_row("rounds", str(summary["rounds"]))
    table.add_row("wall time", f"{summary['wall_seconds']:.1f} s")
    table.add_row("bytes sent", human_bytes(summary["bytes_sent"]))
    table.add_row("dense fp32 equivalent", human_bytes(summary["dense_equivalent_bytes"]))
    ratio = summary["compression_ratio"]
    table.add_row("communication saved", f"{ratio:.1f}x" if ratio else "-")
    table.add_row("samples/s", f"{summary['samples_per_second']:,.0f}")
    table.add_row("restarts", ", ".join(f"{k}: {v}" for k, v in summary["restarts"].items()) or "none")
    console.print(table)
