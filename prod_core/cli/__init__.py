"""Operator CLI: ``python -m prod_core.cli <command>``.

Commands read and write the same SQLite database as the runner; commands for a running
runner go through the commands table (polled by the runner at least once per second)
and are audited.
"""
