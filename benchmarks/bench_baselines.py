"""The issue-15 baselines next to their peers on the same batch (CPU): medians of interleaved rounds, ratios.

Figure of merit: method time / its pass floor, the number of passes it needs × one reference pass of the batch:
  - ``fb_input``: one forward + ``torch.autograd.grad`` w.r.t. the input only (gradient methods);
  - ``f``: one forward under ``torch.no_grad`` (perturbation methods: RISE, LIME, KernelSHAP).
DeepLIFT needs one forward+backward of the ``[x; x̄]`` batch (2 × fb_input; RevealCancel of ``[x; x̄; x̄+Δ⁺; x̄+Δ⁻]``,
4 × fb_input, its "ours/peer" column is against Rescale), DeepSHAP 2·N with N references,
GradientSHAP ``n_samples`` (+ one forward for the target), RISE/LIME/KernelSHAP one forward per mask/coalition,
PrunePGD_50* ``steps`` (its first step's forward gives the mask), Guided IG ``steps``, LRP and Excitation Backprop 1
here (their z⁺-type rules add one forward per conv: floor fb_input + f, see bench_pass_floors.py; the method objects
are reused, as in an evaluation loop, so their modified weights are formed once). Peers: zennit ``EpsilonPlusFlat``
for LRP, TorchRay ``(contrastive_)excitation_backprop`` for Excitation Backprop, Captum ``DeepLift``/``DeepLiftShap``/
``GradientShap``/``Lime``/``KernelShap``
and the RISE authors' loop (masks precomputed, ``gpu_batch`` forwards per image, written out below as in
eclique/RISE ``explanations.py``).

    .venv/bin/python benchmarks/bench_baselines.py                   # timm/resnet18, batch 16 of 32×32, 1 thread
    .venv/bin/python benchmarks/bench_baselines.py --repeats 5 --only deeplift rise
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lit_xai.attribution import build_method  # noqa: E402
from lit_xai.models.backbones import build_backbone  # noqa: E402

Candidate = tuple[str, float, Callable[[torch.Tensor, torch.Tensor], object]]  # (floor kind, passes, fn)


def rise_authors_loop(model: torch.nn.Module, masks: torch.Tensor, x: torch.Tensor, target: torch.Tensor,
                      gpu_batch: int, p: float) -> torch.Tensor:
    """The RISE reference forward (explanations.py ``RISE.forward``), one image at a time, all classes."""
    out = []
    with torch.no_grad():
        for b in range(len(x)):
            stack = masks * x[b : b + 1]
            probs = torch.cat([model(stack[i : i + gpu_batch]).softmax(1) for i in range(0, len(masks), gpu_batch)])
            sal = (probs.T @ masks.view(len(masks), -1)).view(-1, *masks.shape[-2:]) / len(masks) / p
            out.append(sal[target[b]])
    return torch.stack(out)


def candidates(model: torch.nn.Module, x: torch.Tensor, args: argparse.Namespace) -> dict[str, Candidate]:
    from captum.attr import DeepLift, DeepLiftShap, GradientShap, KernelShap, Lime

    background = torch.randn(args.background, *x.shape[1:], generator=torch.Generator().manual_seed(1))
    grid = torch.arange(x.shape[-2] * x.shape[-1]).view(x.shape[-2:])
    grid = (grid // x.shape[-1] * 6 // x.shape[-2]) * 6 + (grid % x.shape[-1]) * 6 // x.shape[-1]  # our 6 × 6 default
    rise = build_method("rise", num_masks=args.masks, mask_resolution=7, max_batch=args.max_batch)
    grids, shifts = rise.grids_and_shifts(tuple(x.shape[-2:]))
    masks = rise.masks(grids, shifts, tuple(x.shape[-2:]))[:, None]
    n, s, mb = args.samples, args.coalitions, args.max_batch
    lrp = build_method("lrp")  # reused across calls: its modified weights are formed once
    excitation = build_method("excitation_backprop")  # reused too (W⁺ kept)
    contrastive = build_method("excitation_backprop", contrastive=True)

    def captum_per_image(explainer, **kwargs):
        return lambda x, t: torch.cat([explainer.attribute(x[b : b + 1], target=int(t[b]), **kwargs)
                                       for b in range(len(x))])

    return {
        "deeplift ours": ("fb_input", 2, lambda x, t: build_method("deeplift", max_batch=mb)(model, x, t)),
        "deeplift captum": ("fb_input", 2, lambda x, t: DeepLift(model).attribute(x, 0.0 * x, target=t)),
        "deeplift reveal_cancel ours": ("fb_input", 4, lambda x, t: build_method(  # rows [x; x̄; x̄+Δ⁺; x̄+Δ⁻]
            "deeplift", rule="reveal_cancel", max_batch=mb)(model, x, t)),
        "deepshap ours": ("fb_input", 2 * args.background,
                          lambda x, t: build_method("deepshap", background=background, max_batch=mb)(model, x, t)),
        "deepshap captum": ("fb_input", 2 * args.background,
                            lambda x, t: DeepLiftShap(model).attribute(x, background, target=t)),
        "gradient_shap ours": ("fb_input", n, lambda x, t: build_method(
            "gradient_shap", background=background, n_samples=n, max_batch=mb)(model, x, t)),
        "gradient_shap captum": ("fb_input", n, lambda x, t: GradientShap(model).attribute(
            x, background, n_samples=n, target=t)),
        "rise ours": ("f", args.masks, lambda x, t: rise(model, x, t)),
        "rise authors": ("f", args.masks, lambda x, t: rise_authors_loop(model, masks, x, t, 100, 0.5)),
        "lime ours": ("f", s, lambda x, t: build_method("lime", n_samples=s, max_batch=mb)(model, x, t)),
        "lime captum": ("f", s, captum_per_image(Lime(model), feature_mask=grid, n_samples=s,
                                                 perturbations_per_eval=min(s, mb))),
        "kernel_shap ours": ("f", s, lambda x, t: build_method("kernel_shap", n_samples=s, max_batch=mb)(model, x, t)),
        "kernel_shap captum": ("f", s, captum_per_image(KernelShap(model), feature_mask=grid, n_samples=s,
                                                        perturbations_per_eval=min(s, mb))),
        "prune_pgd_dead ours": ("fb_input", 20, lambda x, t: build_method("prune_pgd_dead")(model, x, t)),
        "guided_ig ours": ("fb_input", args.gig_steps, lambda x, t: build_method("guided_ig", steps=args.gig_steps)(
            model, x, t)),
        # Excitation Backprop: one forward + one modified backward to the input (contrastive: two more backwards
        # from the classifier to its input only, ~free); peer TorchRay on the same batch (tensor target), input layer
        "excitation_backprop ours": ("fb_input", 1, lambda x, t: excitation(model, x, t)),
        "excitation_backprop torchray": ("fb_input", 1, lambda x, t: torchray_excitation(model, x, t, False)),
        "contrastive_excitation ours": ("fb_input", 1, lambda x, t: contrastive(model, x, t)),
        "contrastive_excitation torchray": ("fb_input", 1, lambda x, t: torchray_excitation(model, x, t, True)),
        "lrp ours": ("fb_input", 1, lambda x, t: lrp(model, x, t)),
        "lrp zennit": ("fb_input", 1, lambda x, t: zennit_lrp(model, x, t)),
    }


def torchray_excitation(model: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, contrastive: bool) -> torch.Tensor:
    """TorchRay's (contrastive) Excitation Backprop at the input; the contrast at the last linear layer's input, as
    ours (``contrast_layer``/``classifier_layer`` name the module before it and the classifier)."""
    from torchray.attribution.excitation_backprop import contrastive_excitation_backprop, excitation_backprop

    if not contrastive:
        return excitation_backprop(model, x, t, saliency_layer="")
    names = [name for name, _ in model.named_modules() if name]
    classifier = [name for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)][-1]
    before = names[names.index(classifier) - 1]
    return contrastive_excitation_backprop(model, x, t, saliency_layer="", contrast_layer=before,
                                           classifier_layer=classifier)


def zennit_lrp(model: torch.nn.Module, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """zennit's EpsilonPlusFlat with its generic BatchNorm canonizer, relevance y_t at the target."""
    from zennit.attribution import Gradient
    from zennit.canonizers import SequentialMergeBatchNorm
    from zennit.composites import EpsilonPlusFlat

    onehot = torch.nn.functional.one_hot(t, 10).to(x)
    with Gradient(model, EpsilonPlusFlat(canonizers=[SequentialMergeBatchNorm()])) as attributor:
        return attributor(x, lambda out: onehot * out)[1]


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="timm/resnet18", help="Captum DeepLift needs each ReLU module called once")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--background", type=int, default=4, help="DeepSHAP/GradientSHAP references")
    parser.add_argument("--samples", type=int, default=16, help="GradientSHAP samples")
    parser.add_argument("--masks", type=int, default=500, help="RISE masks")
    parser.add_argument("--coalitions", type=int, default=200, help="LIME/KernelSHAP coalitions")
    parser.add_argument("--gig-steps", type=int, default=20, help="Guided IG steps")
    parser.add_argument("--max-batch", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", nargs="*", help="substrings of method names to time")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    model = build_backbone(args.model, num_classes=10).eval()
    x = torch.randn(args.batch, 3, args.size, args.size)
    t = torch.randint(0, 10, (args.batch,))
    methods = candidates(model, x, args)
    if args.only:
        methods = {k: v for k, v in methods.items() if any(o.lower() in k.lower() for o in args.only)}

    def fb_input() -> None:
        xg = x.clone().requires_grad_(True)
        torch.autograd.grad(model(xg).gather(1, t[:, None]).sum(), xg)

    def forward() -> None:
        with torch.no_grad():
            model(x)

    references = {"fb_input": fb_input, "f": forward}
    for fn in [*references.values(), *(m[2] for m in methods.values())]:  # warm-up
        fn(x, t) if fn not in references.values() else fn()
    times: dict[str, list[float]] = {k: [] for k in [*references, *methods]}
    for _ in range(args.repeats):
        for key, fn in references.items():
            times[key].append(timed(fn))
        for key, (_, _, fn) in methods.items():
            times[key].append(timed(lambda fn=fn: fn(x, t)))
    floor = {k: statistics.median(v) for k, v in times.items() if k in references}
    print(f"== {args.model}, batch {args.batch} of {args.size}×{args.size}, {args.threads} thread(s), median of "
          f"{args.repeats}: fb_input = {floor['fb_input'] * 1e3:.1f} ms, f = {floor['f'] * 1e3:.1f} ms")
    print(f"{'method':24s} {'time [s]':>9s} {'floor':>9s} {'passes':>7s} {'/ floor':>8s} {'ours/peer':>10s}")
    for key, (kind, passes, _) in methods.items():
        median = statistics.median(times[key])
        peer = next((k for k in methods if k != key and k.split()[0] == key.split()[0]), None)
        ratio = f"{median / statistics.median(times[peer]):10.2f}" if key.endswith("ours") and peer else ""
        print(f"{key:24s} {median:9.3f} {kind:>9s} {passes:7g} {median / (passes * floor[kind]):8.2f} {ratio}")


if __name__ == "__main__":
    main()
