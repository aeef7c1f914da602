"""Alerts: rules over rolled-up negative counts (``rules``, ``stats``), the pure lifecycle
(``lifecycle``), evaluation against the database (``engine``, reporting through ``report``), silences,
the email (``emails``) and its delivery through the outbox (``notify``), and replay (``backtest``)."""

from pipeline.alerts.backtest import BacktestReport, backtest
from pipeline.alerts.engine import AlertReport, evaluate, run_alerts
from pipeline.alerts.notify import DeliveryReport, OutboxError, deliver_outbox, list_outbox, requeue
from pipeline.alerts.rules import Rule, RulesError, load_rules
from pipeline.alerts.silences import SilenceError, add_silence, check_silence, expire_silence, list_silences

__all__ = [
    "AlertReport",
    "BacktestReport",
    "DeliveryReport",
    "OutboxError",
    "Rule",
    "RulesError",
    "SilenceError",
    "add_silence",
    "backtest",
    "check_silence",
    "deliver_outbox",
    "evaluate",
    "expire_silence",
    "list_outbox",
    "list_silences",
    "load_rules",
    "requeue",
    "run_alerts",
]
