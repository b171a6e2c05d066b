#!/usr/bin/env python3
"""Generates deploy/grafana/dashboards/chat.json, the chat backend dashboard.

The JSON is generated so that panels stay uniform (datasource variable,
instance filter, units) and the queries are readable in one place. Edit this
file, then run `python3 deploy/grafana/dashboard.py`; scripts/deploy-checks.sh
fails when chat.json is not what this script writes, and parses every query.
Only metrics of the catalogue in deploy/README.md may appear here.
"""

import json
import pathlib

OUT = pathlib.Path(__file__).parent / "dashboards" / "chat.json"
DS = {"type": "prometheus", "uid": "${datasource}"}
# Every query is limited to the instances picked in the `instance` variable.
I = 'instance=~"$instance"'
RATE = "$__rate_interval"


def q(expr, legend="", **extra):
    return {"expr": expr, "legendFormat": legend, **extra}


def quantiles(metric, by="", qs=(0.5, 0.99)):
    """p50/p99 of a histogram over the selected instances, optionally split."""
    keys = f"{by}, le" if by else "le"
    label = f"{{{{{by}}}}} " if by else ""
    return [
        q(
            f"histogram_quantile({p}, sum by ({keys}) (rate({metric}_bucket{{{I}}}[{RATE}])))",
            f"{label}p{int(p * 100)}",
        )
        for p in qs
    ]


def timeseries(title, targets, unit="short", description="", w=8, stack=False):
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DS,
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "custom": {
                    "drawStyle": "line",
                    "lineWidth": 1,
                    "fillOpacity": 10,
                    "showPoints": "never",
                    "stacking": {"mode": "normal" if stack else "none", "group": "A"},
                },
            },
            "overrides": [],
        },
        "options": {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        "targets": targets,
        "w": w,
    }


def heatmap(title, metric, description=""):
    """A histogram's buckets over time (Prometheus already bucketed: no calculation)."""
    return {
        "type": "heatmap",
        "title": title,
        "description": description,
        "datasource": DS,
        "options": {
            "calculate": False,
            "yAxis": {"unit": "s", "axisPlacement": "left"},
            "rowsFrame": {"layout": "auto"},
            "color": {"mode": "scheme", "scheme": "Oranges", "steps": 64, "exponent": 0.5},
            "cellGap": 1,
            "tooltip": {"mode": "single", "yHistogram": True},
            "legend": {"show": True},
        },
        "targets": [
            q(
                f"sum by (le) (increase({metric}_bucket{{{I}}}[{RATE}]))",
                "{{le}}",
                format="heatmap",
            )
        ],
        "w": 12,
    }


def row(title):
    return {"type": "row", "title": title, "collapsed": False, "panels": []}


PANELS = [
    row("Traffic"),
    timeseries(
        "Messages per second",
        [
            q(f"sum(rate(chat_messages_accepted_total{{{I}}}[{RATE}]))", "accepted (acked)"),
            q(f"sum(rate(chat_messages_delivered_total{{{I}}}[{RATE}]))", "delivered to sessions"),
        ],
        unit="ops",
        description="Accepted: sends acked to their sender. Delivered: message events "
        "handed to recipient sessions (one message reaches several sessions).",
    ),
    timeseries(
        "Client frames in, by type",
        [q(f"sum by (type) (rate(chat_frames_in_total{{{I}}}[{RATE}]))", "{{type}}")],
        unit="ops",
        stack=True,
    ),
    timeseries(
        "Server frames out, by type",
        [q(f"sum by (type) (rate(chat_frames_out_total{{{I}}}[{RATE}]))", "{{type}}")],
        unit="ops",
        stack=True,
    ),
    row("Latency"),
    heatmap(
        "Send → ack",
        "chat_send_ack_seconds",
        "From a send frame received to its ack queued to the sender.",
    ),
    heatmap(
        "Delivery (created_at → recipient session)",
        "chat_delivery_seconds",
        "From acceptance of a message to its hand-off to a recipient session on a node.",
    ),
    timeseries("Send → ack p50 / p99", quantiles("chat_send_ack_seconds"), unit="s", w=12),
    timeseries(
        "Delivery p50 / p99",
        quantiles("chat_delivery_seconds"),
        unit="s",
        w=12,
        description="Alert ChatDeliveryLatencyHigh fires when p99 stays above 250 ms.",
    ),
    row("Connections"),
    timeseries(
        "Open sessions per node",
        [q(f"chat_connections{{{I}}}", "{{instance}}")],
        stack=True,
        w=6,
    ),
    timeseries(
        "Online users per node",
        [q(f"chat_online_users{{{I}}}", "{{instance}}")],
        stack=True,
        w=6,
        description="Distinct users with a session on the node; a user connected to two "
        "nodes counts on both.",
    ),
    timeseries(
        "Connects / disconnects per second",
        [
            q(f"sum(rate(chat_connects_total{{{I}}}[{RATE}]))", "connects"),
            q(f"sum(rate(chat_disconnects_total{{{I}}}[{RATE}]))", "disconnects"),
        ],
        unit="ops",
        w=6,
    ),
    timeseries(
        "Ready per node (1 = /readyz 200)",
        [q(f"chat_ready{{{I}}}", "{{job}} {{instance}}")],
        w=6,
        description="0 while draining or while Redis (or MongoDB, for a persister) is "
        "unreachable. Alert ChatGatewayReadinessFlapping watches its changes.",
    ),
    row("Persister"),
    timeseries(
        "Stream lag and pending entries",
        [
            q(f"max(chat_persister_stream_lag{{{I}}})", "lag (not yet delivered to a persister)"),
            q(f"sum(chat_persister_pending{{{I}}})", "pending (delivered, not acknowledged)"),
        ],
        description="Alert ChatPersisterLagGrowing fires when lag stays above 1000 and grows.",
    ),
    timeseries(
        "Persister throughput",
        [
            q(f"sum(rate(chat_persister_messages_written_total{{{I}}}[{RATE}]))", "written"),
            q(f"sum(rate(chat_persister_messages_replayed_total{{{I}}}[{RATE}]))", "replayed"),
            q(f"sum(rate(chat_persister_batches_total{{{I}}}[{RATE}]))", "batches"),
            q(f"sum(rate(chat_persister_claimed_total{{{I}}}[{RATE}]))", "claimed"),
            q(f"sum(rate(chat_persister_trimmed_total{{{I}}}[{RATE}]))", "trimmed"),
        ],
        unit="ops",
    ),
    timeseries(
        "Persister errors by stage, dead letters",
        [
            q(f"sum by (stage) (rate(chat_persister_errors_total{{{I}}}[{RATE}]))", "{{stage}}"),
            q(
                f"sum(increase(chat_persister_dead_letters_total{{{I}}}[{RATE}]))",
                "dead letters",
            ),
        ],
        description="Dead letters are acked messages MongoDB refused: see ChatDeadLetters.",
    ),
    timeseries(
        "Batch size p50 / p99",
        quantiles("chat_persister_batch_size"),
        description="Stream entries per applied batch (PERSISTER_BATCH_SIZE caps it).",
        w=12,
    ),
    timeseries("Batch write latency p50 / p99", quantiles("chat_persister_write_seconds"), unit="s", w=12),
    row("Errors"),
    timeseries(
        "Refused sends, by code",
        [q(f"sum by (code) (rate(chat_messages_refused_total{{{I}}}[{RATE}]))", "{{code}}")],
        unit="ops",
        w=6,
    ),
    timeseries(
        "Error frames, by code",
        [q(f"sum by (code) (rate(chat_errors_total{{{I}}}[{RATE}]))", "{{code}}")],
        unit="ops",
        w=6,
    ),
    timeseries(
        "Disconnects, by close code",
        [q(f"sum by (code) (rate(chat_disconnects_total{{{I}}}[{RATE}]))", "{{code}}")],
        unit="ops",
        w=6,
        description="1012: drain (deploy); 1013: slow consumer; 4001: token expired; "
        "1006: connection lost.",
    ),
    timeseries(
        "Slow consumers and rate limiting",
        [
            q(f"sum(rate(chat_slow_consumer_disconnects_total{{{I}}}[{RATE}]))", "slow consumers (1013)"),
            q(f"sum(rate(chat_rate_limited_total{{{I}}}[{RATE}]))", "rate limited"),
        ],
        unit="ops",
        w=6,
    ),
    row("Redis"),
    timeseries(
        "Redis command latency p99, by op",
        quantiles("chat_redis_command_seconds", by="op", qs=(0.99,)),
        unit="s",
    ),
    timeseries(
        "Redis errors, by op",
        [q(f"sum by (op) (rate(chat_redis_errors_total{{{I}}}[{RATE}]))", "{{op}}")],
        unit="ops",
    ),
    timeseries(
        "Pub/sub reconnects, by node",
        [q(f"sum by (instance) (increase(chat_pubsub_reconnects_total{{{I}}}[{RATE}]))", "{{instance}}")],
    ),
    row("MongoDB"),
    timeseries(
        "MongoDB commands, by command",
        [q(f"sum by (command) (rate(chat_mongo_commands_total{{{I}}}[{RATE}]))", "{{command}}")],
        unit="ops",
    ),
    timeseries(
        "MongoDB errors, by command",
        [q(f"sum by (command) (rate(chat_mongo_errors_total{{{I}}}[{RATE}]))", "{{command}}")],
        unit="ops",
    ),
    timeseries(
        "MongoDB command latency p99, by command",
        quantiles("chat_mongo_command_seconds", by="command", qs=(0.99,)),
        unit="s",
    ),
]


def layout(panels):
    """Assigns ids, refIds and grid positions: left to right, rows full width."""
    x = y = 0
    height = 8
    out = []
    for pid, panel in enumerate(panels, start=1):
        panel = dict(panel)
        w = 24 if panel["type"] == "row" else panel.pop("w")
        h = 1 if panel["type"] == "row" else height
        if x + w > 24 or panel["type"] == "row":
            if x > 0:
                y += height
            x = 0
        panel["id"] = pid
        panel["gridPos"] = {"h": h, "w": w, "x": x, "y": y}
        for ref, target in zip("ABCDEFGH", panel.get("targets", [])):
            target.update(refId=ref, datasource=DS)
        if panel["type"] == "row":
            y += 1
        else:
            x += w
        out.append(panel)
    return out


DASHBOARD = {
    "uid": "chat-backend",
    "title": "Chat backend",
    "description": "Gateways, persisters, Redis and MongoDB of the chat backend "
    "(metric catalogue: deploy/README.md).",
    "tags": ["chat"],
    "schemaVersion": 39,
    "version": 1,
    "editable": True,
    "graphTooltip": 1,
    "time": {"from": "now-1h", "to": "now"},
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
                "refresh": 1,
                "options": [],
            },
            {
                "name": "instance",
                "label": "Node",
                "type": "query",
                "datasource": DS,
                "query": {"query": "label_values(chat_ready, instance)", "refId": "instance"},
                "definition": "label_values(chat_ready, instance)",
                "multi": True,
                "includeAll": True,
                "allValue": ".*",
                "current": {"text": "All", "value": "$__all"},
                "refresh": 2,
                "sort": 1,
                "hide": 0,
                "options": [],
            },
        ]
    },
    "panels": layout(PANELS),
}


def render():
    return json.dumps(DASHBOARD, indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    OUT.write_text(render(), encoding="utf-8")
    print(f"wrote {OUT}")
