"""Commands of `wsssbench data` (not built yet)."""
