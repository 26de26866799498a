"""Maintenance of a paper-trading installation, as importable modules.

Each module is one operator command with a ``main(argv) -> int`` (the thin entry points under
``scripts/`` call it) plus its reusable functions:

- ``prod_core.maintenance.export``: a run's report folder from the database (``scripts/export_run.py``);
- ``prod_core.maintenance.rotate``: archive old runs, delete them, VACUUM (``scripts/vacuum_and_rotate.py``);
- ``prod_core.maintenance.cleanup``: keep the newest report folders and logs (``scripts/cleanup.py``);
- ``prod_core.maintenance.common``: settings resolution and ``UsageError`` shared by the three.

The submodules are not imported here: ``cleanup`` does not need pyarrow, and a command
pays only for what it uses.
"""
