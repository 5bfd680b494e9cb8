"""Backbones registry, the small backbone and the CAM classifier (CPU, fast)."""
import pytest
import torch

from wsssbench.errors import UserError
from wsssbench.models import BACKBONES, CAMClassifier, build_backbone

torch.set_num_threads(1)


def test_unknown_backbone_lists_names():
    with pytest.raises(UserError, match="known: .*small"):
        build_backbone("resnet9000")


@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_small_strides(output_stride):
    torch.manual_seed(0)
    net = build_backbone("small", output_stride=output_stride).eval()
    x = torch.randn(2, 3, 64, 96)
    feats = net.forward_stages(x)
    assert len(feats) == 5 == len(net.stages)
    for f, c, s in zip(feats, net.stage_channels, net.stage_strides):
        assert f.shape == (2, c, 64 // s, 96 // s)
    assert net.output_stride == output_stride
    assert torch.equal(net(x), feats[-1])


def test_small_bad_stride_and_pretrained():
    with pytest.raises(UserError, match="output_stride 4"):
        build_backbone("small", output_stride=4)
    with pytest.raises(UserError, match="no torchvision weights"):
        build_backbone("small", pretrained="torchvision")


def test_small_deterministic():
    outs = []
    for _ in range(2):
        torch.manual_seed(3)
        net = build_backbone("small")
        torch.manual_seed(4)
        outs.append(net(torch.randn(2, 3, 64, 64)))
    assert torch.equal(outs[0], outs[1])


def test_cam_classifier_logits_are_gap_of_cams():
    torch.manual_seed(0)
    model = CAMClassifier(build_backbone("small"), num_classes=5).eval()
    x = torch.randn(3, 3, 64, 64)
    logits, cams = model.logits_and_cams(x)
    assert cams.shape == (3, 5, 4, 4) and logits.shape == (3, 5)
    torch.testing.assert_close(model(x), cams.mean((2, 3)))
    torch.testing.assert_close(model.cams(x), cams)
    assert model.classifier.bias is None


def test_registry_names():
    assert "small" in BACKBONES.names()
