"""Module-level tests of prod_core.maintenance: its functions called directly on real SQLite files."""
