"""Method adapters, one file per method, installed as ``wsssbench.methods``.

Each module registers a :class:`wsssbench.methods_api.Method` on ``METHODS``; importing
``wsssbench.methods_api`` imports them all. See ``docs/harness.md`` for how to add one.
"""
