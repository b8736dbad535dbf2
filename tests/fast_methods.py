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
