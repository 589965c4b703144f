"""Generate the Grafana dashboard the Helm chart ships (k8s/tuner-service/files/dashboard.json).

`python tools/dashboard.py` (or `make dashboard`) rewrites the JSON; tests/monitoring/
test_dashboard.py fails when the committed JSON differs from what this file generates, and the
end-to-end test runs every panel's query against a real Prometheus scraping a real search.

Why a small generator and not a dashboard library: the whole dashboard is the ``ROWS`` table
below (title, PromQL, unit, kind), which reads like a spec and diffs cleanly in review, while
the Grafana JSON boilerplate (ids, grid positions, datasource and study variables) lives in a
few helpers. No dependency is added for about 20 panels.

Queries use two variables: ``$study`` (a study selector, multi-value) and Grafana's
``$__rate_interval``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "k8s" / "tuner-service" / "files" / "dashboard.json"
S = 'study=~"$study"'  # every query is scoped to the selected studies
DS = {"type": "prometheus", "uid": "${datasource}"}


@dataclass(frozen=True)
class Q:
    expr: str
    legend: str = ""
    fmt: str = "time_series"  # "heatmap" for bucket queries


@dataclass(frozen=True)
class Panel:
    title: str
    queries: tuple[Q, ...]
    unit: str = "short"
    kind: str = "timeseries"  # timeseries | stat | heatmap
    width: int = 12
    height: int = 8
    description: str = ""
    options: dict[str, Any] = field(default_factory=dict)


def sel(metric: str, extra: str = "") -> str:
    """``metric{study=~"$study", extra}``."""
    return f"{metric}{{{S}{', ' + extra if extra else ''}}}"


def rate(metric: str, extra: str = "", fn: str = "rate") -> str:
    return f"{fn}({sel(metric, extra)}[$__rate_interval])"


def quantiles(metric: str, by: str, qs: tuple[float, ...] = (0.5, 0.9), extra: str = "") -> tuple[Q, ...]:
    """One ``histogram_quantile`` query per quantile, by the labels in ``by`` ("a, b")."""
    legend = " ".join("{{" + label.strip() + "}}" for label in by.split(","))
    return tuple(
        Q(
            f"histogram_quantile({q}, sum by (le, {by}) ({rate(metric + '_bucket', extra)}))",
            f"p{int(q * 100)} {legend}",
        )
        for q in qs
    )


COMPLETED, NOT_COMPLETED = 'status="completed"', 'status!="completed"'
ENDED = "tuner_service_trials_ended_total"
DURATION = "tuner_service_trial_duration_seconds"
ROWS: list[tuple[str, list[Panel]]] = [
    (
        "Progress",
        [
            Panel(
                "Progress",
                (
                    Q(
                        f"{sel('tuner_service_trials_completed')} / {sel('tuner_service_trials_max')}",
                        "{{study}}",
                    ),
                ),
                unit="percentunit",
                kind="stat",
                width=4,
                height=5,
                description="Completed trials / max_trials. Failed trials also use up the budget.",
            ),
            Panel(
                "Trials completed / budget",
                (
                    Q(sel("tuner_service_trials_completed"), "completed {{study}}"),
                    Q(sel("tuner_service_trials_max"), "budget {{study}}"),
                ),
                kind="stat",
                width=4,
                height=5,
            ),
            Panel(
                "ETA",
                (
                    Q(
                        f"({sel('tuner_service_trials_max')} - {sel('tuner_service_trials_completed')})"
                        f" / on (study) sum by (study) (rate({sel(ENDED, COMPLETED)}[1h]))",
                        "{{study}}",
                    ),
                ),
                unit="s",
                kind="stat",
                width=4,
                height=5,
                description="Remaining budget / completion rate over the last hour (rough: trials vary).",
            ),
            Panel(
                "Search state",
                (
                    Q(
                        f"max by (study, state) ({sel('tuner_service_search_state')}) == 1",
                        "{{study}}: {{state}}",
                    ),
                ),
                kind="stat",
                width=4,
                height=5,
                options={"textMode": "name"},
            ),
            Panel(
                "Best objective",
                (Q(sel("tuner_service_best_objective"), "{{study}}"),),
                kind="stat",
                width=4,
                height=5,
            ),
            Panel(
                "Workers alive / missing",
                (
                    Q(sel("tuner_service_workers_alive"), "alive {{study}}"),
                    Q(sel("tuner_service_workers_missing"), "missing {{study}}"),
                ),
                kind="stat",
                width=4,
                height=5,
                description="Workers that called the chief within the lease, and those silent past it.",
            ),
        ],
    ),
    (
        "Trials",
        [
            Panel(
                "Trial throughput (per hour)",
                (
                    Q(
                        f"sum by (study, status) ({rate(ENDED)}) * 3600",
                        "{{study}} {{status}}",
                    ),
                    Q(
                        f"sum by (study) ({rate('tuner_service_trials_started_total')}) * 3600",
                        "{{study}} started",
                    ),
                ),
                description="Trial attempts ending per hour, by status, and attempts started per hour.",
            ),
            Panel(
                "Running trials per worker",
                (
                    Q(
                        f"sum by (study, worker) ({sel('tuner_service_trials_running')})",
                        "{{study}} {{worker}}",
                    ),
                ),
                options={"stack": True},
            ),
            Panel(
                "Best objective over time",
                (
                    Q(sel("tuner_service_best_objective"), "best {{study}}"),
                    Q(sel("tuner_service_last_objective"), "last completed {{study}}"),
                ),
            ),
            Panel(
                "Failures and reassignments",
                (
                    Q(
                        f"sum by (study, status) ({rate(ENDED, NOT_COMPLETED, 'increase')})",
                        "{{study}} {{status}}",
                    ),
                    Q(
                        f"sum by (study) ({rate('tuner_service_trials_reassigned_total', fn='increase')})",
                        "{{study}} reassigned",
                    ),
                ),
                options={"bars": True},
            ),
            Panel(
                "Trial duration distribution",
                (
                    Q(
                        f"sum by (le) ({rate(DURATION + '_bucket', COMPLETED, 'increase')})",
                        "{{le}}",
                        "heatmap",
                    ),
                ),
                unit="s",
                kind="heatmap",
                description="Completed trials by duration bucket.",
            ),
            Panel(
                "Trial duration quantiles",
                quantiles(DURATION, "status"),
                unit="s",
            ),
            Panel(
                "Epochs per minute and epoch duration (chief's view)",
                (
                    Q(f"sum by (study) ({rate('tuner_service_epochs_total')}) * 60", "epochs/min {{study}}"),
                    *quantiles("tuner_service_epoch_duration_seconds", "study", (0.5,)),
                ),
                description="Epochs counted from workers' reports; duration = time between reports.",
                width=24,
            ),
        ],
    ),
    (
        "Chief",
        [
            Panel(
                "Chief RPC latency",
                quantiles("tuner_service_rpc_duration_seconds", "method", (0.5, 0.99)),
                unit="s",
            ),
            Panel(
                "Chief RPCs by method and code",
                (
                    Q(
                        f"sum by (method, code) ({rate('tuner_service_rpc_duration_seconds_count')})",
                        "{{method}} {{code}}",
                    ),
                ),
                unit="reqps",
            ),
            Panel(
                "Oracle decision latency",
                quantiles("tuner_service_oracle_decision_duration_seconds", "operation", (0.5, 0.99)),
                unit="s",
            ),
            Panel(
                "Workers",
                (
                    Q(sel("tuner_service_workers_alive"), "alive {{study}}"),
                    Q(sel("tuner_service_workers_missing"), "missing {{study}}"),
                ),
            ),
        ],
    ),
    (
        "Workers",
        [
            Panel(
                "Worker throughput (samples/s)",
                (
                    Q(
                        f"max by (study, worker) ({sel('tuner_service_worker_samples_per_second')})",
                        "last epoch {{study}} {{worker}}",
                    ),
                    Q(
                        f"sum by (study, worker) ({rate('tuner_service_worker_samples_total')})",
                        "average {{study}} {{worker}}",
                    ),
                ),
                description="Training samples per second (validation excluded), as each worker measures it.",
            ),
            Panel(
                "Worker epoch duration",
                quantiles("tuner_service_worker_epoch_duration_seconds", "study, worker", (0.5,)),
                unit="s",
            ),
        ],
    ),
]


# -- Grafana JSON ------------------------------------------------------------------------------
def _targets(panel: Panel) -> list[dict[str, Any]]:
    return [
        {
            "datasource": DS,
            "expr": q.expr,
            "legendFormat": q.legend,
            "format": q.fmt,
            "refId": chr(ord("A") + i),
            **({"instant": False} if panel.kind != "stat" else {}),
        }
        for i, q in enumerate(panel.queries)
    ]


def _panel(panel: Panel, pid: int, x: int, y: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": pid,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DS,
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "targets": _targets(panel),
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
    }
    o = panel.options
    if panel.kind == "stat":
        out["options"] = {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "textMode": o.get("textMode", "value_and_name"),
            "colorMode": "value",
        }
    elif panel.kind == "timeseries":
        custom: dict[str, Any] = {"drawStyle": "bars" if o.get("bars") else "line", "fillOpacity": 10}
        if o.get("stack"):
            custom["stacking"] = {"mode": "normal"}
        out["fieldConfig"]["defaults"]["custom"] = custom
        out["options"] = {
            "legend": {"displayMode": "list", "placement": "bottom"},
            "tooltip": {"mode": "multi"},
        }
    elif panel.kind == "heatmap":
        out["options"] = {"calculate": False, "yAxis": {"unit": panel.unit}, "cellGap": 1}
    return out


def dashboard() -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    pid, y = 1, 0
    for row_title, row in ROWS:
        panels.append(
            {
                "id": pid,
                "type": "row",
                "title": row_title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        pid, y = pid + 1, y + 1
        x, line_height = 0, 0
        for panel in row:
            if x + panel.width > 24:
                x, y = 0, y + line_height
                line_height = 0
            panels.append(_panel(panel, pid, x, y))
            pid, x, line_height = pid + 1, x + panel.width, max(line_height, panel.height)
        y += line_height
    return {
        "title": "tuner-service",
        "uid": "tuner-service",
        "description": "Distributed hyperparameter searches: progress, trials, chief and workers.",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "tags": ["tuner-service"],
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "30s",
        "timezone": "browser",
        "annotations": {"list": []},
        "links": [],
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                },
                {
                    "name": "study",
                    "label": "Study",
                    "type": "query",
                    "datasource": DS,
                    "query": {"query": "label_values(tuner_service_search_state, study)", "refId": "study"},
                    "definition": "label_values(tuner_service_search_state, study)",
                    "refresh": 2,
                    "multi": True,
                    "includeAll": True,
                    "allValue": ".+",
                    "current": {},
                    "sort": 1,
                    "hide": 0,
                },
            ]
        },
        "panels": panels,
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help="where to write (default: %(default)s)")
    args = parser.parse_args(argv)
    args.out.write_text(render())
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
