"""IRN's random walk two ways: the sparse walk against the dense squaring (IRN's arithmetic) and the exact walk."""
from __future__ import annotations

import pytest
import torch

from wsssbench.errors import UserError
from wsssbench.harness import run_method
from wsssbench.models import affinity_matrix
from wsssbench.stages.expand import random_walk, sparse_transition_matrix, transition_matrix



def inputs(h=14, w=11, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(h, w, generator=g) ** 4, torch.rand(k, h * w, generator=g)


def exact(x, edge, radius=5, beta=10.0, exp_times=8):
    """The walk in float64 written plainly: T = A^β / column sums, x·T repeated 2^exp_times times."""
    a = affinity_matrix(edge, radius).to_dense().double().pow(beta)
    t = a / a.sum(0, keepdim=True)
    y = x.double()
    for _ in range(2 ** exp_times):
        y = y @ t
    return y


def test_sparse_transition_matrix_is_the_dense_one_column_stochastic():
    edge, _ = inputs()
    a = affinity_matrix(edge, 5).to_dense().double().pow(10.0)
    sparse = sparse_transition_matrix(edge, 5, 10.0).to_dense()
    assert sparse.dtype == torch.float64
    assert torch.allclose(sparse, a / a.sum(0, keepdim=True), rtol=1e-12, atol=0)
    assert torch.allclose(sparse.sum(0), torch.ones(len(sparse), dtype=torch.float64))
    # radius 5: at most 1 + 2 · 40 non-zeros per column (the pixel and both halves of its disc)
    assert int((sparse != 0).sum(0).max()) <= 81


@pytest.mark.parametrize("exp_times", [0, 1, 4, 8])
def test_sparse_walk_is_the_exact_walk(exp_times):
    edge, x = inputs()
    walked = random_walk(x, edge, 5, 10.0, exp_times, "sparse")
    ref = exact(x, edge, exp_times=exp_times)
    assert walked.dtype == x.dtype and walked.shape == x.shape
    assert (walked.double() - ref).abs().max() <= 1e-6 * ref.abs().max()
    # IRN's dense float32 squarings are within its own rounding of both
    dense = random_walk(x, edge, 5, 10.0, exp_times, "dense")
    assert (dense - walked).abs().max() <= 1e-4 * dense.abs().max()


def test_dense_walk_is_irn_arithmetic():
    edge, x = inputs(9, 12)
    assert torch.equal(random_walk(x, edge, 5, 10.0, 8, "dense"), x @ transition_matrix(edge, 5, 10.0, 8))


def test_unknown_walk_is_one_line(tmp_path):
    with pytest.raises(UserError, match="rw_method=fast: use one of sparse, dense"):
        run_method("irnet", overrides={"rw_method": "fast"}, out=tmp_path)
