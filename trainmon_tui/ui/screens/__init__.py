"""Dashboard screens: the main dashboard, help, and the drill-down screens (host, log)."""
