"""Reference backbones: shapes, strides and dilation at small inputs; weights loading errors."""
import pytest
import torch

from wsssbench.errors import UserError
from wsssbench.models import BACKBONES, build_backbone, load_weights
from wsssbench.models.weights import torchvision_cache_file

torch.set_num_threads(2)

CASES = [  # name, output_stride, expected channels per block, expected strides per block
    ("resnet50", 16, (64, 256, 512, 1024, 2048), (4, 4, 8, 16, 16)),
    ("resnet50", 8, (64, 256, 512, 1024, 2048), (4, 4, 8, 8, 8)),
    ("resnet101", 16, (64, 256, 512, 1024, 2048), (4, 4, 8, 16, 16)),
    ("vgg16", 8, (64, 128, 256, 512, 512), (2, 4, 8, 8, 8)),
    ("vgg16", 16, (64, 128, 256, 512, 512), (2, 4, 8, 16, 16)),
    ("resnet38", 8, (64, 128, 256, 512, 1024, 2048, 4096), (1, 2, 4, 8, 8, 8, 8)),
]


@pytest.mark.parametrize("name,output_stride,channels,strides", CASES)
def test_backbone_shapes(name, output_stride, channels, strides):
    torch.manual_seed(0)
    net = build_backbone(name, output_stride=output_stride).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        feats = net.forward_stages(x)
        # running the blocks one by one (CONTA's hook) gives the same maps
        y = x
        for block, f in zip(net.stages, feats):
            y = block(y)
            torch.testing.assert_close(y, f)
    assert tuple(f.shape[1] for f in feats) == channels == net.stage_channels
    assert tuple(64 // f.shape[-1] for f in feats) == strides == net.stage_strides
    assert net.out_channels == channels[-1] and net.output_stride == output_stride
    if name == "resnet38":  # the count docs/models.md quotes; SEAM's resnet38d.Net has the same
        assert sum(p.numel() for p in net.parameters()) == 105_070_912


def test_dilation_keeps_weights_and_stride():
    """Output stride 8 vs 16 changes only strides/dilations: same parameter shapes."""
    a, b = build_backbone("resnet50", output_stride=8), build_backbone("resnet50", output_stride=16)
    assert {k: v.shape for k, v in a.state_dict().items()} == {k: v.shape for k, v in b.state_dict().items()}
    assert a.layer4[0].conv2.dilation == (2, 2) and a.layer4[1].conv2.dilation == (4, 4)
    assert b.layer4[1].conv2.dilation == (2, 2) and b.layer3[0].conv2.stride == (2, 2)


def test_registry_lists_all():
    assert set(BACKBONES.names()) >= {"small", "resnet50", "resnet101", "vgg16", "resnet38"}


def test_bad_output_stride():
    for name in ("resnet50", "vgg16", "resnet38"):
        with pytest.raises(UserError, match="output_stride 4"):
            build_backbone(name, output_stride=4)


def test_load_weights_roundtrip_and_errors(tmp_path):
    torch.manual_seed(0)
    src = build_backbone("small")
    path = tmp_path / "small.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}}, path)
    dst = load_weights(build_backbone("small"), path)
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v)
    assert torch.equal(build_backbone("small", pretrained=str(path)).block1[0].weight, src.block1[0].weight)

    with pytest.raises(UserError, match="does not exist"):
        load_weights(dst, tmp_path / "nope.pth")
    bad = dict(src.state_dict())
    bad.pop("block1.0.weight")
    bad["extra.weight"] = torch.zeros(1)
    bad["block5.0.weight"] = torch.zeros(3, 3)
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(UserError, match=r"1 missing: block1\.0\.weight.*1 unexpected: extra\.weight.*block5\.0\.weight"):
        load_weights(dst, tmp_path / "bad.pth")
    (tmp_path / "junk.pth").write_text("not a checkpoint")
    with pytest.raises(UserError, match="cannot read weights file"):
        load_weights(dst, tmp_path / "junk.pth")


def test_torchvision_file_layout_loads(tmp_path):
    """A torchvision-layout ResNet file (with ``fc.*``) loads into the backbone."""
    import torchvision
    ref = torchvision.models.resnet50(weights=None)
    torch.save(ref.state_dict(), tmp_path / "r50.pth")
    net = build_backbone("resnet50", pretrained=str(tmp_path / "r50.pth"))
    assert torch.equal(net.layer3[2].conv1.weight, ref.layer3[2].conv1.weight)


def test_torchvision_cache_missing_is_user_error(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(UserError, match="resnet50-0676ba61.pth.*never downloads"):
        build_backbone("resnet50", pretrained="torchvision")
    assert torchvision_cache_file("https://x/y/f.pth") == tmp_path / "hub" / "checkpoints" / "f.pth"
    with pytest.raises(UserError, match="no torchvision weights"):
        build_backbone("resnet38", pretrained="torchvision")
