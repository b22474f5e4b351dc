"""What people read: terminal text, exports (CSV, Markdown, benchmark JSON), the HTML
report, and publishing them at the end of a session.

Runs in the pytest process and the `pytest-llem` command. Never imports `isolation`.
"""
