"""Orchestration: ``python -m prod_core.runner`` wires feeds, the pipeline, storage and telemetry.

``app.PaperRunner`` owns the lifecycle (start, loop, signals, clean stop, linger);
``pipeline.Pipeline`` runs the eight stages per bar. See docs/ARCHITECTURE.md.
"""
