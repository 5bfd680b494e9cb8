"""DeepLab-v2 and the IRN boundary/affinity net on the small backbone (CPU, fast)."""
import itertools
import math

import pytest
import torch

from wsssbench.models import AffinityNet, DeepLabV2, affinity_matrix, build_backbone
from wsssbench.models.affinity import pair_labels, search_paths

torch.set_num_threads(2)


@pytest.mark.parametrize("msc", [True, False])
def test_deeplab_output_size(msc):
    torch.manual_seed(0)
    net = DeepLabV2(build_backbone("small", output_stride=8), num_classes=4, msc_scales=(0.5, 0.75) if msc else ())
    x = torch.randn(2, 3, 64, 80)
    outs = net.outputs(x)
    assert outs[0].shape == (2, 4, 8, 10) and len(outs) == (4 if msc else 1)
    if msc:
        assert outs[1].shape[2:] == (4, 5) and outs[2].shape[2:] == (6, 8)
        assert torch.all(outs[-1] >= outs[0])  # max fusion
    net.eval()
    with torch.no_grad():
        assert net(x).shape == (2, 4, 8, 10)
    labels = torch.randint(0, 4, (2, 64, 80))
    labels[0, :10] = 255
    loss = DeepLabV2.loss(net.train().outputs(x), labels)
    loss.backward()
    assert torch.isfinite(loss) and net.aspp.branches[3].weight.grad is not None
    assert [b.dilation for b in net.aspp.branches] == [(6, 6), (12, 12), (18, 18), (24, 24)]


def _brute_affinity(edge, radius):
    """Plain loops: affinity of every pair closer than radius = 1 − max edge over lattice points within
    distance 1 of the segment joining them."""
    h, w = edge.shape
    a = torch.eye(h * w)
    for (y0, x0), (y1, x1) in itertools.product(itertools.product(range(h), range(w)), repeat=2):
        dy, dx = y1 - y0, x1 - x0
        if (y0, x0) == (y1, x1) or dy * dy + dx * dx >= radius * radius:
            continue
        on_path = [edge[y, x] for y in range(min(y0, y1), max(y0, y1) + 1) for x in range(min(x0, x1), max(x0, x1) + 1)
                   if (dy * (x - x0) - dx * (y - y0)) ** 2 < dy * dy + dx * dx]
        a[y0 * w + x0, y1 * w + x1] = 1 - max(on_path)
    return a


def test_affinity_matches_brute_force_symmetric_in_range():
    torch.manual_seed(0)
    edge = torch.rand(6, 7)
    dense = affinity_matrix(edge, radius=3).to_dense()
    torch.testing.assert_close(dense, _brute_affinity(edge, 3))
    assert torch.equal(dense, dense.T) and dense.min() >= 0 and dense.max() <= 1
    assert torch.all(dense.diagonal() == 1)


def test_affinity_blocked_by_boundary():
    edge = torch.zeros(5, 8)
    edge[:, 4] = 1.0  # a vertical wall
    dense = affinity_matrix(edge, radius=5).to_dense()
    assert dense[2 * 8 + 1, 2 * 8 + 3] == 1 and dense[2 * 8 + 3, 2 * 8 + 6] == 0


def test_search_paths_count():
    # directions in half a disc: pairs at distance < r, one of each ± pair (IRN: 34 for radius 5)
    for r in (3, 5, 10):
        n = sum(1 for y in range(-r, r + 1) for x in range(-r, r + 1) if 0 < x * x + y * y < r * r) // 2
        assert len(search_paths(r)) == n
    assert len(search_paths(5)) == 34


def test_pair_labels():
    labels = torch.tensor([[[0, 0, 1, 255]]])
    bg, fg, neg = pair_labels(labels, radius=2)
    d = [p[0] for p in search_paths(2)].index((0, 1))  # right neighbour
    assert bg[0, d, 0].tolist() == [True, False, False, False]
    assert neg[0, d, 0].tolist() == [False, True, False, False]
    assert not fg.any()


def test_affinity_net_trains_and_loss_is_irn():
    torch.manual_seed(0)
    net = AffinityNet(build_backbone("small"), freeze_backbone=False)
    x = torch.randn(2, 3, 64, 64)
    logits = net(x)
    assert logits.shape == (2, 1, 16, 16) and net.stride == 4
    labels = torch.zeros(2, 64, 64, dtype=torch.long)
    labels[:, 16:48, 16:48] = 1
    labels[:, 12:16] = 255
    loss = AffinityNet.loss(logits, labels, radius=5)
    loss.backward()
    assert net.backbone.block1[0].weight.grad is not None
    # a boundary-free map: −log(1e-5 … ) on different-label pairs only
    flat = torch.full((1, 1, 16, 16), -30.0)
    lab = torch.zeros(1, 16, 16, dtype=torch.long)
    lab[:, :, 8:] = 1
    expected = (0 + -math.log(1 + 1e-5 - (1 - torch.sigmoid(torch.tensor(-30.0)).item()))) / 2
    torch.testing.assert_close(AffinityNet.loss(flat, lab, radius=3), torch.tensor(expected), rtol=1e-3, atol=1e-3)


def test_affinity_net_frozen_backbone():
    net = AffinityNet(build_backbone("small")).train()
    assert not net.backbone.training and not any(p.requires_grad for p in net.backbone.parameters())
    AffinityNet.loss(net(torch.randn(1, 3, 32, 32)), torch.zeros(1, 32, 32, dtype=torch.long), radius=3).backward()
    assert net.fuse.weight.grad is not None


def test_affinity_net_resnet50_taps():
    net = AffinityNet(build_backbone("resnet50"))
    assert net.taps == [0, 1, 2, 3, 4] and net.stride == 4
    assert net(torch.randn(1, 3, 64, 64)).shape == (1, 1, 16, 16)


def test_channels_last_bf16_autocast():
    torch.manual_seed(0)
    model = DeepLabV2(build_backbone("small", output_stride=8), 3).to(memory_format=torch.channels_last)
    x = torch.randn(1, 3, 48, 48).to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model.outputs(x)
        loss = DeepLabV2.loss(out, torch.zeros(1, 48, 48, dtype=torch.long))
        aff = AffinityNet(build_backbone("small")).to(memory_format=torch.channels_last)
        edge_loss = AffinityNet.loss(aff(x), torch.zeros(1, 48, 48, dtype=torch.long), radius=3)
    (loss + edge_loss).backward()
    assert torch.isfinite(loss) and torch.isfinite(edge_loss)
