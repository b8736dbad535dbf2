"""Reduced iteration/sample counts so that every registered method runs in about a second in the support sweeps
(tests of *support* on a model, not of the protocols' defaults)."""

FAST_KWARGS: dict[str, dict] = {
    "extremal_perturbation": {"iterations": 5},
    "rise": {"num_masks": 50},
    "lime": {"n_samples": 50},
    "kernel_shap": {"n_samples": 50},
    "guided_ig": {"steps": 8},
    "integrated_gradients": {"steps": 4},
    "input_intgrad": {"steps": 4},
    "smoothgrad": {"samples": 3},
    "smoothgrad_sq": {"samples": 3},
    "gradient_shap": {"n_samples": 3},
    "occlusion": {"patch": 8, "stride": 8},
}

#: the support sweeps' settings plus InputIBA's (its GAN is fitted on every call in a sweep)
SWEEP_KWARGS: dict[str, dict] = {**FAST_KWARGS,
                                 "input_iba": {"gan_epochs": 1, "gan_target_samples": 8, "feature_steps": 2}}
#: methods whose ResNet-only defaults the digits CNN refuses with an AttributionError naming the method
DIGITS_REFUSE = {"prune_grad_mid"}


def check_serves(model, name: str, inputs, target) -> None:  # noqa: ANN001 (test helper: torch objects)
    """Run method ``name`` (sweep settings) on ``model``: finite maps of the batch, or the refusal named above; the
    model's state is left as found and no parameter gradient is left behind."""
    import warnings

    import pytest
    import torch

    from lit_xai.attribution import AttributionError, build_method

    state = {k: v.clone() for k, v in model.state_dict().items()}
    method = build_method(name, **SWEEP_KWARGS.get(name, {}))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*no feature statistics.*")  # the IBA family's prior warning
        if name in DIGITS_REFUSE:
            with pytest.raises(AttributionError, match=name):
                method(model, inputs, target)
        else:
            maps = method(model, inputs, target)
            assert maps.shape[0] == inputs.shape[0] and bool(torch.isfinite(maps).all())
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
