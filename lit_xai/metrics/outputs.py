"""Which output of the model a perturbation metric records for the explained target.

- ``logit``: the raw output column ``f_t(x)`` (Ancona et al.'s Sensitivity-n; Quantus ``softmax=False``);
- ``probability``: the softmax probability of column t (single-label classifiers; Samek et al., Petsiuk et al.);
- ``sigmoid``: σ(f_t(x)), the probability of label t of a multi-label classifier (seed 002, "Explaining COVID-19…":
  each NIH label is one sigmoid output);
- ``identity``: the raw output column, named for outputs that are not logits — the regression score or an expected
  region score (the CheXplain-IBA code's ``evaluation/regression_sensitivity_n.py`` records ``output[:, 0]`` of the
  regression model as is). Numerically equal to ``logit``.
"""

from __future__ import annotations

from torch import Tensor

OUTPUTS = ("logit", "probability", "sigmoid", "identity")


def check_output(output: str, allowed: tuple[str, ...] = OUTPUTS) -> None:
    """A ``ValueError`` naming the allowed outputs when ``output`` is not one of them."""
    if output not in allowed:
        raise ValueError(f"output={output!r}: expected one of {allowed}")


def target_output(outputs: Tensor, target: Tensor, output: str) -> Tensor:
    """The recorded output of column ``target[b]`` per row ``[N]`` (float32) of model outputs ``[N, K]``."""
    check_output(output)
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= outputs.shape[1]):
        raise ValueError(
            f"target indices must lie in [0, {outputs.shape[1]}) (the model's outputs), got "
            f"[{int(target.min())}, {int(target.max())}]"
        )
    if output == "probability":
        return outputs.float().log_softmax(1).gather(1, target[:, None]).squeeze(1).exp()
    chosen = outputs.gather(1, target[:, None]).squeeze(1).float()
    return chosen.sigmoid() if output == "sigmoid" else chosen
