"""What people read: terminal text, exports (CSV, Markdown, benchmark JSON), the HTML
report, and publishing them at the end of a session; the history site of all saved runs
(`history_site`, `pytest-llem publish`).

Runs in the pytest process and the `pytest-llem` command. Never imports `isolation`, nor
`settings` (which names the options that choose what is written, and imports this package's
defaults from here, at no cost).
"""

#: Without --llem-power-chart, the HTML report draws power over time for this many experiments.
DEFAULT_POWER_CHARTS = 6
