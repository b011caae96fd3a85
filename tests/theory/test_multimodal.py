"""Multimodal adaptation, the linear analogue: stage 1's closed form against GD and gradient flow, stage 1
leaving L_A exactly unchanged, stage 2 decoupling into one small network per mode, its leading-order
damage, and how the overlap of B's outputs with A's orders the damage."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from theory import closed_form, multimodal, protocol, simulate, tasks
from theory.finetune import finetune_gd
from theory.network import end_to_end, task_loss

S = jnp.array([1.0, 0.6, 0.3])  # a small aligned teacher: three modes in d_in = h = 3, d_out = 6
KEY = jax.random.PRNGKey(0)


def _aligned(T, s=S, d_in=3, d_out=6, u0=1e-6):
    """(task, W(T)) of the aligned balanced network along its closed-form trajectory."""
    task = tasks.teacher(KEY, s, d_out, d_in)
    return task, protocol.closed_form_weights(s, u0, jnp.asarray(T, float), task.U, task.V, h=d_in)


def _at(Ws_T, t):
    return tuple(W[t] for W in Ws_T)


def _random_network():
    """A non-aligned depth-2 network with singular values spread over two decades, and a random B and P0."""
    k1, k2, k3, k4 = jax.random.split(jax.random.PRNGKey(3), 4)
    W1 = jax.random.normal(k1, (4, 5)) * jnp.array([1.0, 0.5, 0.2, 0.05])[:, None]
    W2 = jax.random.normal(k2, (6, 4)) * 0.05
    return (W1, W2), jax.random.normal(k3, (6, 3)), 0.1 * jax.random.normal(k4, (5, 3))


def test_stage_1_closed_form_is_gd_and_gradient_flow():
    """P after n GD steps on 1/2 ||M P - B||^2 from a random P0, through M's singular basis, equals n
    explicit GD steps, and its flow form equals RK4 gradient flow for tau = lr n: P and L_B to 1e-4
    relative, a non-aligned M whose sigma_min is tiny (its direction barely moves)."""
    Ws, B, P0 = _random_network()
    M = end_to_end(Ws)
    lr, n = 0.3, 200

    def step(P, _):
        return P - lr * M.T @ (M @ P - B), None

    gd, _ = jax.lax.scan(step, P0, None, length=n)
    closed = multimodal.projector_fit(M, B, lr, n, P0)
    np.testing.assert_allclose(closed, gd, rtol=1e-4, atol=1e-5 * float(jnp.abs(gd).max()))
    assert float(task_loss((closed, *Ws), B)) == pytest.approx(float(task_loss((gd, *Ws), B)), rel=1e-4)
    (flow,) = simulate.gradient_flow(lambda Ps: task_loss((Ps[0], *Ws), B), (P0,), jnp.array([lr * n]), 0.01)
    closed_flow = multimodal.projector_fit(M, B, lr, n, P0, flow=True)
    np.testing.assert_allclose(closed_flow, flow[0], rtol=1e-4, atol=1e-5 * float(jnp.abs(flow).max()))
    # GD and flow differ by O(lr sigma^2) per step: the two closed forms are not interchangeable.
    assert float(jnp.abs(closed - closed_flow).max()) > 1e-3
    # Zero steps: P0 itself; infinitely many: the part of B in M's range, P = M^+ (B - M P0) + P0.
    np.testing.assert_array_equal(multimodal.projector_fit(M, B, lr, 0, P0), P0)
    far = multimodal.projector_fit(M, B, 1.0, 10**9, P0, flow=True)
    np.testing.assert_allclose(M @ far, M @ (jnp.linalg.pinv(M) @ (B - M @ P0) + P0), rtol=1e-3, atol=1e-4)


def test_stage_1_leaves_L_A_exactly_unchanged():
    """W is frozen in stage 1, so L_A after it is L_A(W(T)) to the last bit and its excess exactly 0,
    at every T; L_B after it never exceeds L_B at P = 0."""
    T = jnp.array([0.1, 5.0, 20.0, 1000.0])
    task, Ws_T = _aligned(T)
    B = multimodal.modality_task(task.U, S[::-1], 0.6, KEY, 4)
    c = multimodal.multimodal_curves(Ws_T, task.matrix, B, projector_lr=0.5, projector_steps=50, lr=0.05, steps=20)
    clean = jax.vmap(lambda *Ws: task_loss(Ws, task.matrix))(*Ws_T)
    np.testing.assert_array_equal(c.projector_pretrain_loss, clean)
    np.testing.assert_array_equal(c.projector_excess, np.zeros(len(T)))
    assert (np.asarray(c.projector_finetune_loss) <= 0.5 * float(jnp.sum(B**2)) * (1 + 1e-6)).all()


def test_stage_2_decouples_into_one_small_network_per_mode():
    """From an aligned W(T) and P0 = 0, every GD step keeps P = sum p_i V_i R_i^T, W_1 = sum a_i e_i V_i^T
    and W_2's column i in span(U_i, U_perp_i): stage 2 is r independent networks of widths (1, 1, 1, 2)
    fitting b_i (c, sqrt(1 - c^2)) while A's mode reads (s_i, 0). The sums of their losses are the
    matrix run's (1e-4 relative), at a T where the modes are learned to different degrees."""
    T, c, lr, steps = jnp.array([12.0]), 0.6, 0.1, 60
    task, Ws_T = _aligned(T)
    b = S[::-1]
    B = multimodal.modality_task(task.U, b, c, KEY, 4)
    Ws = _at(Ws_T, 0)
    P, joint = multimodal.adapt(Ws, B, projector_lr=0.5, projector_steps=30, lr=lr, steps=steps)
    u = closed_form.mode_strength(S, 1e-6, T[0])
    g = multimodal.fitted_fraction(u, 0.5, 30)
    L_A = L_B = 0.0
    for i in range(3):
        p = g[i] * c * b[i] / u[i]
        small = (jnp.array([[p]]), jnp.array([[jnp.sqrt(u[i])]]), jnp.array([[jnp.sqrt(u[i])], [0.0]]))
        B_i = jnp.array([[c * b[i]], [np.sqrt(1 - c**2) * b[i]]])
        tuned = finetune_gd(small, B_i, lr, steps)
        L_A += float(task_loss(tuned[1:], jnp.array([[S[i]], [0.0]])))
        L_B += float(task_loss(tuned, B_i))
    assert float(task_loss(joint[1:], task.matrix)) == pytest.approx(L_A, rel=1e-4)
    assert float(task_loss(joint, B)) == pytest.approx(L_B, rel=1e-4)


def test_learned_mode_damage_is_the_leading_order_of_stage_2():
    """At T = 1e4 (every mode learned, u = s) the rise of L_A over a short stage 2 of time tau tends to
    (tau^2 / 2) sum_i g_i^2 c^2 b_i^4 [(1 - c^2) + 4 (1 - g_i)^2 c^2]: the relative error is O(tau),
    below 3% at tau = 0.02 and halving with tau."""
    task, Ws_T = _aligned([1e4])
    b, c = S[::-1], 0.6
    B = multimodal.modality_task(task.U, b, c, KEY, 3)
    g = multimodal.fitted_fraction(S, 0.5, 4)
    errors = []
    for tau in (0.04, 0.02):
        curves = multimodal.multimodal_curves(
            Ws_T, task.matrix, B, projector_lr=0.5, projector_steps=4, lr=tau / 20, steps=20
        )
        predicted = float(jnp.sum(multimodal.learned_mode_damage(b, c, g, tau)))
        errors.append(float(curves.joint_excess[0]) / predicted - 1)
    assert abs(errors[1]) < 0.03 and abs(errors[1]) < 0.6 * abs(errors[0]), errors


def _damage(c, projector_lr, projector_steps, lr, steps):
    """(L_A after stage 2 - L_A, the curves) at T = 1e4 (every mode learned), B of overlap c."""
    task, Ws_T = _aligned([1e4])
    B = multimodal.modality_task(task.U, S[::-1], c, KEY, 3)
    curves = multimodal.multimodal_curves(
        Ws_T, task.matrix, B, projector_lr=projector_lr, projector_steps=projector_steps, lr=lr, steps=steps
    )
    return float(curves.joint_excess[0]), curves


def test_overlap_zero_is_a_saddle_and_a_short_stage_1_orders_the_damage_by_overlap():
    """c = 0: B lies outside A's range, stage 1 leaves P = 0 and stage 2 sits at a saddle, so nothing moves
    (no damage, no learning of B). A short stage 1 (g = 0.94, 0.55, 0.17) and stage 2 (tau = 0.2):
    damage grows with c, as ``learned_mode_damage`` orders it (the stretch of the modes stage 1 left
    unfit dominates), within 20% of its values."""
    zero, curves = _damage(0.0, 0.5, 4, 0.05, 40)
    assert abs(zero) < 1e-9
    assert float(curves.joint_finetune_loss[0]) == pytest.approx(float(curves.projector_finetune_loss[0]), rel=1e-6)
    assert float(curves.projector_finetune_loss[0]) == pytest.approx(0.5 * float(jnp.sum(S**2)), rel=1e-6)
    overlaps = (0.3, 0.7, 1.0)
    short = [_damage(c, 0.5, 4, 0.005, 40)[0] for c in overlaps]
    g = multimodal.fitted_fraction(S, 0.5, 4)
    predicted = [float(jnp.sum(multimodal.learned_mode_damage(S[::-1], c, g, 0.2))) for c in overlaps]
    assert 0 < short[0] < short[1] < short[2], short
    np.testing.assert_allclose(short, predicted, rtol=0.2)


def test_after_a_converged_stage_1_less_overlap_turns_the_learned_modes_further():
    """A converged stage 1 (g = 1) fits B's in-range part: c = 1 leaves stage 2 nothing (no damage at any
    tau). Otherwise stage 2 turns each learned mode's hidden unit toward B's outputs: at tau = 0.02 the
    damage is c^2 (1 - c^2) (``learned_mode_damage``, within 5%), largest near c = 0.7; at tau = 20 the turn is
    nearly complete, A's mode i reads s_i (c, sqrt(1 - c^2)) instead of (s_i, 0), and the damage nears
    sum_i s_i^2 (1 - c), largest for the smallest overlap (within 20%: the turn is slowest where the
    residual outside A's range, sqrt(1 - c^2) b, is smallest)."""
    overlaps = (0.3, 0.7, 0.9, 1.0)
    early = [_damage(c, 1.0, 2000, 0.0005, 40)[0] for c in overlaps]
    predicted = [float(jnp.sum(multimodal.learned_mode_damage(S[::-1], c, 1.0, 0.02))) for c in overlaps]
    assert early[1] > max(early[0], early[2]) and abs(early[3]) < 1e-9, early
    np.testing.assert_allclose(early, predicted, rtol=0.05, atol=1e-9)
    late = [_damage(c, 1.0, 2000, 0.05, 400)[0] for c in overlaps]
    assert late[0] > late[1] > late[2] > 0 and abs(late[3]) < 1e-9, late
    np.testing.assert_allclose(late, [float(jnp.sum(S**2)) * (1 - c) for c in overlaps], rtol=0.2, atol=1e-9)


def test_forgetting_switches_on_as_the_modes_are_learned():
    """c = 1, short stage 1: stage 2 leaves L_A alone while no mode is learned (|excess| < 1e-9 at
    T = 0.1), may help a mode on its way (first order: u < s is pushed up toward s), and past the last
    learning time damages every learned mode: the excess at the end of the grid is positive, the
    largest of the curve, and constant once every mode is learned."""
    T = jnp.logspace(-1, 4, 21)
    task, Ws_T = _aligned(T)
    B = multimodal.modality_task(task.U, S[::-1], 1.0, KEY, 3)
    excess = np.asarray(
        multimodal.multimodal_curves(
            Ws_T, task.matrix, B, projector_lr=0.5, projector_steps=4, lr=0.05, steps=40
        ).joint_excess
    )
    assert abs(excess[0]) < 1e-9
    assert excess[-1] > 1e-4 and excess[-1] >= excess.max() * (1 - 1e-5)
    last = float(closed_form.learning_time(S[-1], 1e-6))
    np.testing.assert_allclose(excess[T > 10 * last], excess[-1], rtol=1e-4)


def test_results_do_not_depend_on_the_modality_basis():
    """z is white and P starts at 0: B -> B Q for an orthogonal Q (d_z x d_z) changes no loss."""
    task, Ws_T = _aligned([3.0, 30.0])
    B = multimodal.modality_task(task.U, S[::-1], 0.5, KEY, 5)
    Q = tasks.random_orthonormal(jax.random.PRNGKey(9), 5, 5)
    run = [
        multimodal.multimodal_curves(Ws_T, task.matrix, X, projector_lr=0.5, projector_steps=10, lr=0.05, steps=30)
        for X in (B, B @ Q)
    ]
    for name in ("projector_finetune_loss", "joint_pretrain_loss", "joint_finetune_loss"):
        np.testing.assert_allclose(getattr(run[1], name), getattr(run[0], name), rtol=1e-5)


def test_the_modality_task_has_the_stated_overlap():
    """B^T's column space meets A's outputs U at cosine c: U^T B = c diag(b) R^T, and ||B|| = ||b||."""
    task = tasks.teacher(KEY, S, 6, 3)
    B = multimodal.modality_task(task.U, S[::-1], 0.3, KEY, 4)
    np.testing.assert_allclose(jnp.linalg.norm(task.U.T @ B, axis=1), 0.3 * S[::-1], rtol=1e-5)
    assert float(jnp.sum(B**2)) == pytest.approx(float(jnp.sum(S**2)), rel=1e-5)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda U: multimodal.modality_task(U, [1.0, 0.5, 0.2], 1.5, KEY, 3), r"overlap=1.5 must be >= 0 and <= 1"),
        (lambda U: multimodal.modality_task(U, [1.0, 0.5, 0.2], 0.5, KEY, 2), r"d_z=2 must be >= the task rank 3"),
        (lambda U: multimodal.modality_task(U[:4], [1.0, 0.5, 0.2], 0.5, KEY, 3), r"overlap=0.5 needs d_out >= 2 r"),
        (lambda U: multimodal.modality_task(U, [1.0, -0.5, 0.2], 0.5, KEY, 3), r"b=.* must be >= 0"),
        (lambda U: multimodal.projector_fit(U, U, 0.1, -1), r"steps=-1 must be an integer >= 0"),
        (lambda U: multimodal.projector_fit(U, U, 0.0, 3), r"lr=0.0 must be > 0"),
        (lambda U: multimodal.projector_fit(U, U, 0.1, 3, jnp.zeros((2, 3))), r"P0 has shape"),
        (lambda U: multimodal.projector_fit(U, U[:4], 0.1, 3), r"B has shape"),
        (lambda U: multimodal.learned_mode_damage(1.0, 0.5, 1.2, 1.0), r"g=1.2 must be >= 0 and <= 1"),
    ],
)
def test_bad_input_is_refused_by_name(call, match):
    U = tasks.teacher(KEY, S, 6, 3).U
    with pytest.raises(ValueError, match=match):
        call(U)
