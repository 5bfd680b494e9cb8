"""Every docstring example of the package and its methods runs (by import name, so ``methods/`` is
``wsssbench.methods`` and registers once, as it does for users)."""
from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import wsssbench
import wsssbench.methods


def _modules_with_examples() -> list[str]:
    names = []
    # wsssbench.methods installs from the top-level methods/ folder, outside wsssbench's own path
    found = [*pkgutil.walk_packages(wsssbench.__path__, "wsssbench."),
             *pkgutil.walk_packages(wsssbench.methods.__path__, "wsssbench.methods.")]
    for info in found:
        spec = importlib.util.find_spec(info.name)
        if spec and spec.origin and spec.origin.endswith(".py"):
            with open(spec.origin, encoding="utf-8") as f:
                if ">>>" in f.read():
                    names.append(info.name)
    return sorted(names)


MODULES = _modules_with_examples()


def test_the_examples_are_found():
    assert "wsssbench.methods_api" in MODULES and "wsssbench.methods.c2am" in MODULES and len(MODULES) >= 13


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0, f"{name}: {result.failed} of {result.attempted} failed"
