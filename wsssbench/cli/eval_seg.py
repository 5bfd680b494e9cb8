"""Commands of `wsssbench eval_seg` (not built yet)."""
