"""Backbones by name, weight loading, ClassifierModule optimisation settings."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch import nn

from lit_xai.models import BackboneError, ClassifierModule, build_backbone
from lit_xai.models.backbones import CNN6, ResNet8


def test_resnet8_matches_the_roar_architecture():
    net = build_backbone("resnet8", num_classes=10, in_chans=3)
    assert isinstance(net, ResNet8)
    stem_conv = net.stem[0]
    assert (stem_conv.in_channels, stem_conv.out_channels, stem_conv.kernel_size) == (3, 64, (3, 3))
    blocks = [net.layer1, net.layer2, net.layer3]
    assert [b.conv1.out_channels for b in blocks] == [64, 128, 256]
    assert [b.conv1.stride for b in blocks] == [(1, 1), (2, 2), (2, 2)]
    assert (net.fc.in_features, net.fc.out_features) == (256, 10)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_cnn6_has_six_convs_and_three_linears():
    net = build_backbone("cnn6", num_classes=10, in_chans=3)
    assert isinstance(net, CNN6)
    assert sum(isinstance(m, nn.Conv2d) for m in net.modules()) == 6
    assert sum(isinstance(m, nn.Linear) for m in net.modules()) == 3
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize(("name", "in_chans", "size"), [("timm/resnet18", 1, 32), ("torchvision/vgg11", 3, 32)])
def test_timm_and_torchvision_backbones(name, in_chans, size):
    net = build_backbone(name, num_classes=7, in_chans=in_chans).eval()
    assert net(torch.randn(1, in_chans, size, size)).shape == (1, 7)


@pytest.mark.parametrize(
    ("name", "expected"),
    [("resnet9", "resnet8"), ("timm/resnet181", "resnet18"), ("torchvision/vgg17", "vgg16"), ("alexnet", "timm/")],
)
def test_unknown_backbone_names_list_what_exists(name, expected):
    with pytest.raises(BackboneError, match=expected):
        build_backbone(name)


def test_backbone_kwargs_reach_the_constructor_and_bad_ones_are_named():
    narrow = ClassifierModule("cnn6", num_classes=4, in_chans=3, backbone_kwargs={"channels": [8, 8, 16, 16, 32, 32]})
    convs = [m.out_channels for m in narrow.net.modules() if isinstance(m, nn.Conv2d)]
    assert convs == [8, 8, 16, 16, 32, 32]
    assert narrow.net(torch.randn(2, 3, 32, 32)).shape == (2, 4)
    timm_net = build_backbone("timm/resnet18", num_classes=3, drop_rate=0.25)
    assert timm_net.drop_rate == 0.25
    with pytest.raises(BackboneError, match="cnn6.*widths"):
        build_backbone("cnn6", widths=(1, 2, 3))


def test_local_weights_from_state_dict_and_lightning_checkpoint(tmp_path):
    source = ClassifierModule(backbone="resnet8", in_chans=1)
    torch.save(source.net.state_dict(), tmp_path / "plain.pt")
    trainer = L.Trainer(logger=False, max_epochs=0, enable_progress_bar=False)
    trainer.strategy.connect(source)
    trainer.save_checkpoint(tmp_path / "module.ckpt")
    for path in (tmp_path / "plain.pt", tmp_path / "module.ckpt"):
        loaded = build_backbone("resnet8", in_chans=1, weights=path)
        for key, value in source.net.state_dict().items():
            assert torch.equal(loaded.state_dict()[key], value), (path, key)
    with pytest.raises(BackboneError, match="do not fit"):
        build_backbone("cnn6", in_chans=1, weights=tmp_path / "plain.pt")
    with pytest.raises(BackboneError, match="not found"):
        build_backbone("resnet8", weights=tmp_path / "missing.pt")


@pytest.mark.parametrize(
    ("optimizer", "scheduler", "opt_type", "sched_type"),
    [
        ("adam", "step", torch.optim.Adam, torch.optim.lr_scheduler.StepLR),
        ("sgd", "cosine", torch.optim.SGD, torch.optim.lr_scheduler.CosineAnnealingLR),
        ("adamw", "none", torch.optim.AdamW, None),
    ],
)
def test_optimizer_and_schedule_are_configurable(optimizer, scheduler, opt_type, sched_type):
    module = ClassifierModule(optimizer=optimizer, scheduler=scheduler, lr=0.05, weight_decay=1e-4, max_epochs=5)
    config = module.configure_optimizers()
    opt = config["optimizer"] if isinstance(config, dict) else config
    assert isinstance(opt, opt_type) and opt.param_groups[0]["lr"] == 0.05
    if sched_type is not None:
        assert isinstance(config["lr_scheduler"]["scheduler"], sched_type)


def test_top1_and_top5_accuracy_metrics():
    module = ClassifierModule(num_classes=10)
    logits = torch.eye(10)[[0, 1, 2, 3]] * 5 + torch.arange(10.0) / 100  # predicted: 0,1,2,3; top-5 adds 9,8,7,6
    labels = torch.tensor([0, 1, 9, 4])
    module.metrics["val_acc"](logits, labels)
    module.metrics["val_top5"](logits, labels)
    assert module.metrics["val_acc"].compute() == pytest.approx(0.5)
    assert module.metrics["val_top5"].compute() == pytest.approx(0.75)
