"""Commands of `wsssbench leaderboard` (not built yet)."""
