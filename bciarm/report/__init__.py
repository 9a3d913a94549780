"""Session reports: ``bciarm report SESSION`` → ``report.html``."""

from bciarm.report.html import build_report

__all__ = ["build_report"]
