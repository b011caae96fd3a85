"""The six claims of docs/THEORY.md ("What must come out"), on the default setup, in closed form."""

import jax.numpy as jnp
import numpy as np
import pytest

from theory import closed_form, finetune, measure, perturbation, protocol

STEPS = 100  # fine-tuning steps; tau = lr * STEPS
LRS = (0.005, 0.01, 0.02, 0.04)
GAMMAS = (0.15, 0.2, 0.3, 0.4)


def curves(st, gamma=0.1, tau=1.0, reg=0.0):
    d = st["d"]
    return protocol.closed_form_curves(
        st["s"],
        st["b"],
        st["u0"],
        st["T"],
        gamma=gamma,
        sigma1=st["sigma"],
        sigma2=st["sigma"],
        d_in=d,
        h=d,
        d_out=d,
        tau=tau,
        reg=reg,
    )


def is_u_shaped(T, y):
    i = int(jnp.argmin(y))
    return 0 < i < len(T) - 1 and float(y[0] - y[i]) > 0 and float(y[-1] - y[i]) > 0


def test_claim1_gaussian_excess_grows_monotonically(default_setup):
    for gamma in GAMMAS:
        excess = curves(default_setup, gamma=gamma).excess
        assert bool(jnp.all(jnp.diff(excess) >= 0)), gamma
        assert float(excess[-1]) > 2 * float(excess[0])


def test_claim2_perturbed_loss_u_shaped_and_inflection_moves_earlier(default_setup):
    T = default_setup["T"]
    t_star = []
    for gamma in GAMMAS:
        y = curves(default_setup, gamma=gamma).perturbed_pretrain_loss
        assert is_u_shaped(T, y), gamma
        t_star.append(float(measure.inflection(T, y)))
    assert all(a > b for a, b in zip(t_star, t_star[1:])), t_star


def test_claim2_inflection_sits_near_the_first_harmful_mode(default_setup):
    """T* is near the learning time of the first mode with s_i < 2 c gamma^2 (the per-mode trade-off)."""
    st = default_setup
    for gamma in GAMMAS:
        threshold = perturbation.harm_threshold(gamma, st["sigma"], st["sigma"], st["d"], st["d"])
        first_harmful = st["s"][st["s"] < threshold][0]
        predicted = float(closed_form.learning_time(first_harmful, st["u0"]))
        observed = float(measure.inflection(st["T"], curves(st, gamma=gamma).perturbed_pretrain_loss))
        assert 0.5 < observed / predicted < 1.5, (gamma, observed, predicted)


def test_claim3_forgetting_after_finetuning_is_u_shaped_and_moves_earlier_with_lr(default_setup):
    T = default_setup["T"]
    t_star = []
    for lr in LRS:
        y = curves(default_setup, tau=lr * STEPS).finetuned_pretrain_loss
        assert is_u_shaped(T, y), lr
        t_star.append(float(measure.inflection(T, y)))
    assert all(a > b for a, b in zip(t_star, t_star[1:])), t_star


@pytest.mark.parametrize("gamma", [0.12, 0.18, 0.25, 0.35, 0.5, 0.6])
def test_claim4_late_increase_always_comes_for_gaussian(default_setup, gamma):
    T = default_setup["T"]
    y = curves(default_setup, gamma=gamma).perturbed_pretrain_loss
    assert np.isfinite(float(measure.inflection(T, y)))
    assert float(y[-1]) > float(jnp.min(y))


@pytest.mark.parametrize("lr", [0.001, 0.003, 0.01, 0.03, 0.1])
def test_claim4_late_increase_always_comes_for_finetuning(default_setup, lr):
    T = default_setup["T"]
    y = curves(default_setup, tau=lr * STEPS).finetuned_pretrain_loss
    assert np.isfinite(float(measure.inflection(T, y)))
    assert float(y[-1]) > float(jnp.min(y))


def test_claim5_regularisation_delays_inflection_and_raises_finetune_loss(default_setup):
    T = default_setup["T"]
    t_star, final_L_B = [], []
    for reg in (0.0, 0.1, 0.3, 1.0):
        c = curves(default_setup, tau=2.0, reg=reg)
        t = float(measure.inflection(T, c.finetuned_pretrain_loss))
        t_star.append(np.inf if np.isnan(t) else t)
        final_L_B.append(float(c.finetuned_finetune_loss[-1]))
    assert all(a < b for a, b in zip(t_star, t_star[1:])), t_star
    assert all(a < b for a, b in zip(final_L_B, final_L_B[1:])), final_L_B


def test_claim6_shrinking_lr_delays_or_removes_degradation_at_a_cost(default_setup):
    T = default_setup["T"]
    fixed = curves(default_setup, tau=0.04 * STEPS)
    t_fixed = float(measure.inflection(T, fixed.finetuned_pretrain_loss))
    for power in (0.5, 1.0):
        tau_T = finetune.shrinking_lr(0.04, T, 10.0, power)[:, None] * STEPS
        shrunk = curves(default_setup, tau=tau_T)
        t = float(measure.inflection(T, shrunk.finetuned_pretrain_loss))
        assert np.isnan(t) or t > t_fixed, (power, t, t_fixed)
        late = T > t_fixed
        # Less forgetting late in pre-training, bought with a worse in-task loss.
        assert bool(jnp.all(shrunk.finetuned_pretrain_loss[late] < fixed.finetuned_pretrain_loss[late]))
        assert bool(jnp.all(shrunk.finetuned_finetune_loss[late] > fixed.finetuned_finetune_loss[late]))
