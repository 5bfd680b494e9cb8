"""Commands of `wsssbench eval_wsol` (not built yet)."""
