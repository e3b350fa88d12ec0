"""The benchmark's figures as PNG next to docs/BENCHMARKS.md (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:gray")


def _axes(ncols: int = 1, width: float = 7):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(1, ncols, figsize=(width, 4))


def _save(fig, path: Path) -> str:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def learning_curves(path: Path, curves: dict[str, list[float]], central: dict[str, float]) -> str:
    """Accuracy per round of each federated run, the centralized baselines as dotted lines; returns the file name."""
    fig, ax = _axes()
    for (label, ys), color in zip(curves.items(), ("tab:blue", "tab:orange", "tab:purple", "tab:green")):
        ax.plot(range(1, len(ys) + 1), ys, marker="o", label=label, color=color)
    for (task, v), color in zip(central.items(), ("tab:blue", "tab:green")):
        ax.axhline(v, ls=":", color=color, label=f"{task}, centralized")
    ax.set(xlabel="round", ylabel="accuracy (union of holdouts)", title="federated vs centralized, 3 non-IID customers")
    ax.legend(fontsize=8)
    return _save(fig, path)


def serving_curves(
    path: Path, title: str, served: dict[str, dict[int, tuple[float, float]]], inprocess: dict[str, float]
) -> str:
    """Two panels against concurrent clients: images/s and p50 latency of each served setup (``served``: setup ->
    clients -> (images/s, p50 ms); the first two drawn bold), the in-process references (name -> images/s) as
    dashed lines; returns the file name."""
    fig, (tput, lat) = _axes(2, 12)
    for i, ((name, points), color) in enumerate(zip(served.items(), COLORS)):
        clients, lw = sorted(points), 2.5 if i < 2 else 1.2  # the first two: the comparison that matters most
        tput.plot(clients, [points[c][0] for c in clients], marker="o", color=color, lw=lw, label=name)
        lat.plot(clients, [points[c][1] for c in clients], marker="o", color=color, lw=lw, label=name)
    for (name, v), style in zip(inprocess.items(), ("--", ":", "-.")):
        tput.axhline(v, ls=style, color="black", lw=1, label=name)
    for ax in (tput, lat):
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({c for p in served.values() for c in p}), labels=None)
        ax.get_xaxis().set_major_formatter("{x:g}")
        ax.set_xlabel("concurrent clients")
    tput.set(ylabel="images/s", title=title, ylim=(0, None))
    lat.set(ylabel="p50 latency, ms (log)", yscale="log", title="latency")
    tput.legend(fontsize=7)
    return _save(fig, path)
