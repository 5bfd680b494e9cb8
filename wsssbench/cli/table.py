"""Commands of `wsssbench table` (not built yet)."""
