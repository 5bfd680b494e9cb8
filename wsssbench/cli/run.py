"""Commands of `wsssbench run` (not built yet)."""
