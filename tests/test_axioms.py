"""Axiom framework: decoder, placement, batched generation (promised properties), scene store, command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from lit_xai.axioms.decoder import BatchedDeepImagePrior
from lit_xai.axioms.generation import DecoderConfig, GenerationConfig, SceneGenerator, constant_cross_entropy
from lit_xai.axioms.scenarios import PLACEMENT_UNIFORMS, paste, patch_masks, place_patches
from lit_xai.axioms.store import SceneStore
from lit_xai.storage import weights_fingerprint as model_fingerprint

SMALL_DECODER = DecoderConfig(noise_channels=4, channels=(4, 8), skip_channels=(0, 2), down_kernel_sizes=(5, 3),
                              up_kernel_sizes=(5, 3))  # the reference's first two levels


def test_decoder_reference_geometry_and_shapes() -> None:
    # the reference: depth 6, 256² noise, stride-3 head -> 86² patch
    ref = BatchedDeepImagePrior([0], patch_size=86, channels=(2,) * 6, skip_channels=(0,) + (1,) * 5, noise_channels=2)
    assert ref.noise.shape[-1] == 256
    out = ref()
    assert out.shape == (1, 3, 86, 86) and bool(((out > 0) & (out < 1)).all())
    with pytest.raises(ValueError, match="multiple of"):
        BatchedDeepImagePrior([0], patch_size=8, channels=(4, 8), skip_channels=(0, 2), noise_size=30,
                              down_kernel_sizes=(5, 3), up_kernel_sizes=(5, 3))
    with pytest.raises(ValueError, match="one odd kernel size per level"):
        BatchedDeepImagePrior([0], patch_size=8, channels=(4, 8), skip_channels=(0, 2))


def test_decoder_kernels_are_the_authors_skip_net() -> None:
    """Issue 19 item 14: every level convolution was 3×3; the authors' ``skip_net`` (Do-Explanations-Explain
    ``networks.py``) uses filter_size_down = [5, 3, 5, 5, 3, 5], filter_size_up = [5, 3, 5, 3, 5, 3], 1×1 skips and
    a 1×1 convolution after every up block."""
    ref = BatchedDeepImagePrior([0], patch_size=86, channels=(2,) * 6, skip_channels=(0,) + (1,) * 5, noise_channels=2)
    assert DecoderConfig().down_kernel_sizes == ref.down_kernel_sizes == (5, 3, 5, 5, 3, 5)
    assert DecoderConfig().up_kernel_sizes == ref.up_kernel_sizes == (5, 3, 5, 3, 5, 3)
    for level, params in enumerate(ref.levels):
        assert params["down1_weight"].shape[-1] == params["down2_weight"].shape[-1] == ref.down_kernel_sizes[level]
        assert params["up1_weight"].shape[-1] == ref.up_kernel_sizes[level]
        assert params["up2_weight"].shape[-1] == 1 and ("skip_weight" not in params or
                                                        params["skip_weight"].shape[-1] == 1)


def test_decoder_members_are_independent_and_batch_invariant() -> None:
    kwargs = dict(patch_size=6, out_channels=1, noise_channels=3, channels=(4, 8), skip_channels=(0, 2),
                  down_kernel_sizes=(5, 3), up_kernel_sizes=(5, 3))
    batched = BatchedDeepImagePrior([11, 22, 33], **kwargs)
    alone = BatchedDeepImagePrior([22], **kwargs)
    torch.testing.assert_close(batched()[1:2], alone(), atol=1e-5, rtol=1e-5)
    # a loss on member 0 leaves the other members' gradients at zero
    batched()[0].sum().backward()
    grads = [p.grad for p in batched.parameters()]
    assert all(g[1:].abs().max() == 0 for g in grads)
    assert any(g[0].abs().max() > 0 for g in grads)


def test_placement_in_bounds_and_disjoint() -> None:
    u = torch.rand(500, PLACEMENT_UNIFORMS, generator=torch.Generator().manual_seed(0))
    corners = place_patches(u, 20, 6, 2)
    assert int(corners.min()) >= 0 and int(corners.max()) <= 14
    masks = patch_masks(corners, 20, 6)
    assert not bool((masks[:, 0] & masks[:, 1]).any())
    assert masks.flatten(2).sum(-1).eq(36).all()
    # both axes and both orders occur
    assert bool((corners[:, 0, 0] < corners[:, 1, 0]).any()) and bool((corners[:, 0, 0] > corners[:, 1, 0]).any())


def test_paste_matches_slicing_and_is_differentiable() -> None:
    images = torch.rand(2, 3, 10, 10)
    patches = torch.rand(2, 3, 4, 4, requires_grad=True)
    corners = torch.tensor([[0, 6], [5, 2]])
    out = paste(images, patches, corners)
    expected = images.clone()
    expected[0, :, 0:4, 6:10] = patches[0].detach()
    expected[1, :, 5:9, 2:6] = patches[1].detach()
    torch.testing.assert_close(out.detach(), expected)
    out.sum().backward()
    assert torch.equal(patches.grad, torch.ones_like(patches))


class PatchNet(nn.Module):
    """A tiny classifier that local patches can drive: conv → ReLU → global average pool → linear."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(3)
        self.conv = nn.Conv2d(1, 16, 3, padding=1)
        self.fc = nn.Linear(16, 4)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=gen))
            self.conv.bias.zero_()
            # class c reads channels 4c..4c+3 only, so a patch can drive one class and leave another unchanged
            self.fc.weight.copy_(torch.block_diag(*[torch.full((1, 4), 10.0)] * 4))
            self.fc.bias.fill_(30.0)  # logits far from 0: the relative-change criterion (App. 6.3) is meaningful

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


def tiny_config(**overrides: object) -> GenerationConfig:
    base = dict(
        image_size=16, patch_size=6, mean=(0.5,), std=(0.5,), iterations=50, warmup_iterations=20,
        min_iterations=10, lr=0.02, drive_threshold=0.7, independence_threshold=0.2, decoder=SMALL_DECODER,
    )
    base.update(overrides)
    return GenerationConfig(**base)  # type: ignore[arg-type]


def _logit(model: nn.Module, cfg: GenerationConfig, image: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(cfg.normalize(image)).gather(1, cls[:, None]).squeeze(1)


def _softmax(model: nn.Module, cfg: GenerationConfig, image: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(cfg.normalize(image)).softmax(1).gather(1, cls[:, None]).squeeze(1)


def _changes(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.tanh((a - b).abs() / torch.minimum(a.abs(), b.abs()))


def test_null_feature_scenes_keep_their_promise() -> None:
    """Independently of the generator's own bookkeeping: rebuild the images by hand and check Eq. 1-2."""
    torch.manual_seed(0)
    model = PatchNet().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = tiny_config()
    result = SceneGenerator(model, 4, cfg, seed=0).generate("null_feature", list(range(4)))
    scenes = result.scenes
    assert len(scenes) >= 2, f"only {len(scenes)} of {result.attempted} null scenes verified"
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.requires_grad for p in model.parameters())
    a, b = scenes.classes[:, 0], scenes.classes[:, 1]
    x, x_a, x_null, x_both = scenes.images(()), scenes.images((0,)), scenes.images((1,)), scenes.images((0, 1))
    thr = cfg.independence_threshold
    # f_null drives b, f_a drives a
    assert bool((_softmax(model, cfg, x_null, b) >= cfg.drive_threshold).all())
    assert bool((_softmax(model, cfg, x_a, a) >= cfg.drive_threshold).all())
    # adding f_null changes Φ_a neither alone nor together with f_a
    assert bool((_changes(_logit(model, cfg, x_null, a), _logit(model, cfg, x, a)) < thr).all())
    assert bool((_changes(_logit(model, cfg, x_both, a), _logit(model, cfg, x_a, a)) < thr).all())
    assert bool((torch.tanh(scenes.independence_ratio) < thr).all())


@pytest.mark.parametrize("scenario", ["class_sensitivity_single", "class_sensitivity_double", "saturation"])
def test_other_scenarios_keep_their_promise(scenario: str) -> None:
    model = PatchNet().eval()
    fixed = [(5, 1), (5, 7)]  # side by side, as configs/axioms_digits.yaml places the saturation patches
    cfg = tiny_config(fixed_corners={"saturation": fixed})
    scenes = SceneGenerator(model, 4, cfg, seed=0).generate(scenario, list(range(4))).scenes
    assert len(scenes) >= 1
    if scenario == "saturation":
        assert torch.equal(scenes.corners, torch.tensor([fixed] * len(scenes)))
    thr = cfg.independence_threshold
    a = scenes.classes[:, 0]
    if scenario == "class_sensitivity_single":
        b = scenes.classes[:, 1]
        assert bool((_softmax(model, cfg, scenes.images((0,)), a) >= cfg.drive_threshold).all())
        change = _changes(_logit(model, cfg, scenes.images((0,)), b), _logit(model, cfg, scenes.images(()), b))
        assert bool((change < thr).all())
    else:
        b = scenes.classes[:, 1] if scenario == "class_sensitivity_double" else a
        both = _logit(model, cfg, scenes.images((0, 1)), b), _logit(model, cfg, scenes.images((0, 1)), a)
        assert bool((_changes(both[0], _logit(model, cfg, scenes.images((1,)), b)) < thr).all())
        assert bool((_changes(both[1], _logit(model, cfg, scenes.images((0,)), a)) < thr).all())
        assert bool((_softmax(model, cfg, scenes.images((1,)), b) >= cfg.drive_threshold).all())


def test_scene_is_the_same_alone_or_in_a_batch() -> None:
    """Scene 2 optimised with three others or on its own: same classes, positions, background and patches."""
    model = PatchNet().eval()
    cfg = tiny_config(iterations=14, min_iterations=12, drive_threshold=0.0, independence_threshold=1.0)
    gen = SceneGenerator(model, 4, cfg, seed=0)
    batch = gen.generate("null_feature", [0, 1, 2, 3]).scenes
    alone = gen.generate("null_feature", [2]).scenes
    assert len(batch) == 4 and len(alone) == 1
    mine = batch.select(batch.scene_ids == 2)
    assert torch.equal(mine.classes, alone.classes) and torch.equal(mine.corners, alone.corners)
    assert torch.equal(mine.backgrounds, alone.backgrounds) and torch.equal(mine.iterations, alone.iterations)
    torch.testing.assert_close(mine.patches, alone.patches, atol=1e-4, rtol=1e-4)
    # and the other scenes differ from it (the comparison can fail)
    assert not torch.allclose(batch.patches[1], batch.patches[2], atol=1e-3)


def test_fixed_corners_are_checked() -> None:
    model = PatchNet().eval()
    for corners in ([(0, 0)], [(0, 0), (0, 11)], [(0, 0), (3, 3)]):  # too few, outside, overlapping
        cfg = tiny_config(fixed_corners={"saturation": corners})
        with pytest.raises(ValueError, match="fixed_corners"):
            SceneGenerator(model, 4, cfg, seed=0).generate("saturation", [0])


def test_constant_cross_entropy_is_smallest_at_the_target() -> None:
    softmax = torch.tensor([0.2, 0.5, 0.9, 0.95, 0.99], dtype=torch.float64)
    loss = constant_cross_entropy(softmax.log(), 0.95)
    expected = -(0.95 * softmax.log() + 0.05 * torch.log(1 - softmax))  # hand-written binary cross-entropy
    torch.testing.assert_close(loss, expected)
    assert int(loss.argmin()) == 3
    logits = torch.tensor([[0.3, 1.0, -0.5]], requires_grad=True)
    constant_cross_entropy(logits.log_softmax(-1)[:, 1], 0.95).sum().backward()
    assert float(logits.grad[0, 1]) < 0  # below the target: raise the class logit


def test_verification_drops_scenes_that_break_the_property() -> None:
    model = PatchNet().eval()
    cfg = tiny_config()
    gen = SceneGenerator(model, 4, cfg, seed=0)
    scenes = gen.generate("null_feature", list(range(4))).scenes
    assert len(scenes) >= 1
    broken = scenes.select(slice(0, len(scenes)))
    broken.patches = broken.patches.flip(1)  # swap f_a and f_null: f_null no longer drives b
    assert len(gen.verify(broken)) < len(scenes)


def test_store_writes_atomically_resumes_and_keys_by_model(tmp_path: Path) -> None:
    model = PatchNet().eval()
    cfg = tiny_config(iterations=40, drive_threshold=0.0, independence_threshold=1.0)  # every scene verifies
    calls: list[int] = []
    store = SceneStore(tmp_path, "class_sensitivity_single", model, 4, cfg, seed=0, chunk_size=2)
    first = store.ensure(3, on_chunk=lambda i, r: calls.append(i))
    assert calls == [0, 1] and len(first) == 3
    assert not list(store.directory.glob("*.tmp"))
    # an interrupted run: chunk 1 lost -> only chunk 1 is regenerated, identically
    manifest = json.loads(store.manifest_path.read_text())
    del manifest["chunks"]["1"]
    store.manifest_path.write_text(json.dumps(manifest))
    calls.clear()
    again = SceneStore(tmp_path, "class_sensitivity_single", model, 4, cfg, seed=0, chunk_size=2)
    second = again.ensure(3, on_chunk=lambda i, r: calls.append(i))
    assert calls == [1]
    torch.testing.assert_close(second.patches, first.patches)
    # other weights -> other fingerprint -> other directory
    other = PatchNet()
    with torch.no_grad():
        other.fc.bias.add_(1.0)
    assert model_fingerprint(other) != model_fingerprint(model)
    assert SceneStore(tmp_path, "class_sensitivity_single", other, 4, cfg, 0, 2).directory != store.directory


def tiny_command_args(weights: Path) -> list[str]:
    """The axiom command on a 4-class digits CNN with a tiny decoder and generation budget (every scene verifies)."""
    return [
        "--model.name", "digits_cnn", "--model.num_classes", "4", "--model.in_chans", "1",
        "--model.weights", str(weights),
        "--generation.image_size", "16", "--generation.patch_size", "6", "--generation.mean", "[0.5]",
        "--generation.std", "[0.5]", "--generation.iterations", "12", "--generation.warmup_iterations", "4",
        "--generation.min_iterations", "10", "--generation.drive_threshold", "0.0",
        "--generation.independence_threshold", "1.0",
        "--generation.decoder.noise_channels", "2", "--generation.decoder.channels", "[2, 4]",
        "--generation.decoder.skip_channels", "[0, 1]", "--generation.decoder.down_kernel_sizes", "[5, 3]",
        "--generation.decoder.up_kernel_sizes", "[5, 3]",
    ]


def test_axioms_command_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lit_xai.axioms.command import main

    monkeypatch.setenv("WANDB_MODE", "offline")
    weights = tmp_path / "net.pt"
    from lit_xai.models.backbones import build_backbone

    torch.save(build_backbone("digits_cnn", num_classes=4, in_chans=1).state_dict(), weights)
    args = [
        *tiny_command_args(weights),
        "--num_scenes", "3", "--chunk_size", "3", "--methods", "[gradient, gradcam, random]",
        "--layer_sweep.methods", "[gradcam]", "--layer_sweep.layers", "[features.2, features.6]",
        "--output_dir", str(tmp_path / "out"), "--progress", "false", "--threads", "1",
    ]
    main(args)
    out = tmp_path / "out"
    table = (out / "axioms_table.csv").read_text().splitlines()
    assert table[0].split(",") == [
        "method", "null_feature", "class_sensitivity_single", "class_sensitivity_double", "saturation"
    ]
    assert [line.split(",")[0] for line in table[1:]] == ["gradient", "gradcam", "random"]
    assert (out / "axioms_layers.csv").is_file() and (out / "generation.csv").is_file()
    assert (out / "examples_null_feature.png").is_file() and (out / "axioms_table.png").is_file()
    assert list((out / "wandb").glob("offline-run-*"))


def test_axioms_command_fits_iba_statistics_on_the_training_data_and_reuses_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 19 item 9: the command ran IBA on the statistics of the explained batch (it warned "no feature
    statistics"); now they are estimated on the host model's training DataModule, cached by weights + data + layer
    and reused on a rerun. Without a DataModule an IBA-family method is refused with a clear error."""
    import warnings

    from lit_xai.attribution.information import statistics
    from lit_xai.axioms.command import main
    from lit_xai.models.backbones import build_backbone

    monkeypatch.setenv("WANDB_MODE", "offline")
    weights = tmp_path / "net.pt"
    torch.save(build_backbone("digits_cnn", num_classes=4, in_chans=1).state_dict(), weights)
    args = [
        *tiny_command_args(weights),
        "--scenarios", "[null_feature]", "--num_scenes", "2", "--chunk_size", "2", "--methods", "[iba]",
        "--method_kwargs", '{"iba": {"steps": 2, "noise_draws": 2, "stats_samples": 48}}',
        "--output_dir", str(tmp_path / "out"), "--progress", "false", "--threads", "1", "--wandb.enabled", "false",
    ]
    with pytest.raises(ValueError, match="needs feature statistics of the host model's training data"):
        main(args)
    data = ["--data.class_path", "lit_xai.data.DigitsDataModule",
            "--data.init_args", '{"image_size": 16, "batch_size": 16, "mean": [0.5], "std": [0.5]}']
    threads, rng = torch.get_num_threads(), torch.get_rng_state()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        main(args + data + ["--threads", str(threads + 1)])
    assert not [w for w in caught if "feature statistics" in str(w.message)]
    # the command's thread count and seed do not leak into the caller's process
    assert torch.get_num_threads() == threads and torch.equal(torch.get_rng_state(), rng)
    cached = list((tmp_path / "out" / "iba_stats").glob("iba_stats-*.pt"))
    assert len(cached) == 1 and cached[0].name.endswith("-n48.pt")
    first = (tmp_path / "out" / "axioms_table.csv").read_text()

    def fail(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("feature statistics recomputed despite the cache")

    monkeypatch.setattr(statistics, "welford_over_loader", fail)
    main(args + data)
    assert (tmp_path / "out" / "axioms_table.csv").read_text() == first
