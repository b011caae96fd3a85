"""The explorer: the linear theory's closed forms under sliders, a result store's curves overlaid.

    make explore                        # = marimo run notebooks/explore.py (a browser tab)
    marimo edit notebooks/explore.py    # the same, with the code
    python notebooks/explore.py         # headless: every cell once, with the default controls

The numbers come from ``experiments.explore`` (the closed forms of ``theory``), the figures from
``paper_figures.explorer``; this file only wires controls to them.
"""

import marimo

__generated_with = "0.25.2"
app = marimo.App(width="medium")

with app.setup:
    import threading

    import marimo as mo

    from experiments import explore
    from experiments.overlay import store_overlay
    from paper_figures import explorer as figures

    SLIDER = dict(show_value=True, full_width=True)


@app.cell(hide_code=True)
def _():
    mo.md(
        r"""
        # Catastrophic overtraining, under sliders

        A depth-L linear network pre-trained on A = U diag(s) V^T (s_i = s1 i^-alpha, i <= rank) from
        strength u0, then **perturbed** (noise std gamma x sigma on every layer; the exact expected loss)
        or **fine-tuned** on B for lr x steps with an L2 pull lambda toward W(T). Two mitigations have closed
        forms: weight decay in pre-training (mode i heads for s_i - weight decay) and replay r of A in
        fine-tuning (mode i heads for (1 - r) b_i + r s_i). T* is the pre-training
        time after which more pre-training makes the modified model worse on A; the dashed line is the
        analytic prediction of ``theory.prediction`` (depth 2). d_in = h = d_out = 32, T on the presets'
        grid (81 times in [0.1, 10^4]); the defaults are the presets' default setup.
        """
    )
    return


@app.cell
def _():
    default = explore.DEFAULT
    alpha = mo.ui.slider(0.25, 2.0, 0.05, value=default.alpha, label="spectrum exponent alpha", **SLIDER)
    rank = mo.ui.slider(1, explore.D, 1, value=default.rank, label="rank", **SLIDER)
    s1 = mo.ui.slider(steps=[0.25, 0.5, 1.0, 2.0, 4.0], value=default.s1, label="s1", **SLIDER)
    u0 = mo.ui.slider(steps=[1e-9, 1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2], value=default.u0, label="u0", **SLIDER)
    depth = mo.ui.slider(1, 4, 1, value=default.depth, label="depth", **SLIDER)
    gamma = mo.ui.slider(steps=list(explore.GAMMA_STOPS), value=default.gamma, label="gamma", **SLIDER)
    sigma = mo.ui.slider(
        steps=[0.0884, 0.125, 0.1768, 0.25], value=0.1768, label="init_std sigma (1/sqrt(32) = 0.1768)", **SLIDER
    )
    lr = mo.ui.slider(steps=[0.005, 0.01, 0.02, 0.04, 0.08, 0.16], value=default.lr, label="fine-tuning lr", **SLIDER)
    steps = mo.ui.slider(steps=[25, 50, 100, 200, 400], value=default.steps, label="fine-tuning steps", **SLIDER)
    reg = mo.ui.slider(steps=[0.0, 0.1, 0.3, 1.0, 3.0], value=default.reg, label="L2 pull lambda", **SLIDER)
    task = mo.ui.dropdown(list(explore.TASKS), value=default.finetune_task, label="task B")
    theta = mo.ui.slider(0.0, 1.5, 0.05, value=default.theta, label="rotation theta (rotated)", **SLIDER)
    rho = mo.ui.slider(-1.0, 1.0, 0.05, value=default.rho, label="correlation rho (correlated)", **SLIDER)
    decay = mo.ui.slider(
        steps=[0.0, 0.01, 0.03, 0.1, 0.3], value=default.weight_decay, label="pre-training weight decay", **SLIDER
    )
    replay = mo.ui.slider(0.0, 1.0, 0.05, value=default.replay, label="replay r of A in fine-tuning", **SLIDER)
    mo.hstack(
        [
            mo.vstack([mo.md("**spectrum and network**"), alpha, rank, s1, u0, depth]),
            mo.vstack([mo.md("**noise and fine-tuning**"), gamma, sigma, lr, steps, reg]),
            mo.vstack([mo.md("**task B and mitigations**"), task, theta, rho, decay, replay]),
        ],
        widths="equal",
    )
    return alpha, decay, depth, gamma, reg, lr, rank, replay, rho, s1, sigma, steps, task, theta, u0


@app.cell
def _(alpha, decay, depth, gamma, reg, lr, rank, replay, rho, s1, sigma, steps, task, theta, u0):
    # sigma's slider shows 4 digits; its 1/sqrt(32) stop is the default setup's exact value.
    sigma_value = explore.DEFAULT.init_std if sigma.value == 0.1768 else sigma.value
    setup = explore.Setup(
        alpha.value, rank.value, s1.value, u0.value, depth.value, gamma.value, sigma_value, lr.value, steps.value,
        reg.value, task.value, theta.value, rho.value, weight_decay=decay.value, replay=replay.value,
    )  # fmt: skip
    return (setup,)


@app.cell
def _(setup):
    try:
        result, problem = explore.explore(setup), None
    except ValueError as error:  # a combination the theory refuses (e.g. rotating rank > d/2): say which
        result, problem = None, str(error)
    return problem, result


@app.cell
def _(problem, result):
    if result is None:
        shown = mo.callout(mo.md(f"**Not computable:** {problem}"), kind="warn")
    else:
        shown = mo.vstack([mo.md(figures.t_star_text(result)), mo.image(figures.screen_png(result))])
    shown  # noqa: B018 (marimo shows a cell's last expression)
    return


@app.cell
def _():
    # Compile the other depths, the L2 pull and the GD path in the background, so that later control
    # changes find them compiled (each costs 1-5 s once; see benchmarks/explore_speed.py). Not when run
    # as a script: there every cell runs once and nothing is moved.
    if mo.running_in_notebook():
        threading.Thread(target=explore.warm, daemon=True).start()
    return


@app.cell(hide_code=True)
def _():
    mo.md(
        r"""
        ## Measured curves on the theory's axis

        Any result store (a run directory or a folder of them: ``results/``, ``paper_figures/reference/llm``)
        is loaded with ``rundir.store.load`` and fitted as ``ovt compare`` fits it (point fit, no
        bootstrap): the linear model maps the store's time (tokens for an LLM) to flow time by
        T = kappa x tokens. For a theory store, the stored T* of the current setup's cell is shown
        beside the explorer's.
        """
    )
    return


@app.cell
def _():
    store_path = mo.ui.text(
        value=str(mo.notebook_dir() / ".." / "paper_figures" / "reference" / "llm"),
        label="result store",
        full_width=True,
    )
    store_path  # noqa: B018 (marimo shows a cell's last expression)
    return (store_path,)


@app.cell
def _(store_path):
    store_dir = store_path.value
    return (store_dir,)


@app.cell
def _(store_dir):
    try:
        overlay, store_problem = store_overlay(store_dir), None
    except ValueError as error:
        overlay, store_problem = None, str(error)
    return overlay, store_problem


@app.cell
def _(overlay, result, setup, store_problem):
    if overlay is None:
        store_shown = mo.callout(mo.md(f"**No store:** {store_problem}"), kind="warn")
    else:
        kappas = "; ".join(f"{name}: kappa = {k:.4g}" for name, k in overlay.kappa().items()) or "none"
        stored = {m: overlay.stored_t_star(setup, m) for m in ("gaussian", "finetune")}
        lines = [f"**Fitted map** T = kappa x store time: {kappas}"]
        for m, t in stored.items():
            if t is not None and result is not None:
                lines.append(f"stored T* ({m}) of this setup = {t:.4g}; explorer: {result.t_star[m]:.4g}")
        store_shown = mo.vstack([mo.md("  \n".join(lines)), mo.image(figures.png(figures.overlay(overlay.fits)))])
    store_shown  # noqa: B018 (marimo shows a cell's last expression)
    return


@app.cell(hide_code=True)
def _():
    mo.md(
        r"""
        ## Test your own hypothesis

        The same in code: a steeper spectrum of 16 modes, B its permutation, noise gamma = 0.3:

        ```python
        from experiments.explore import Setup, explore
        result = explore(Setup(alpha=1.5, rank=16, finetune_task="permuted", gamma=0.3))
        result.t_star     # {'gaussian': T* of the perturbed L_A, 'finetune': T* of the fine-tuned L_A}
        result.predicted  # theory.prediction's T* for the perturbed L_A
        ```
        """
    )
    return


@app.cell
def _():
    hypothesis = explore.explore(explore.Setup(alpha=1.5, rank=16, finetune_task="permuted", gamma=0.3))
    mo.md(figures.t_star_text(hypothesis))
    return (hypothesis,)


if __name__ == "__main__":
    # Headless (``python notebooks/explore.py``): every cell runs, then the T* lines of the default view
    # and of the hypothesis cell print.
    _, defs = app.run()
    print(defs["figures"].t_star_text(defs["result"]))
    print("hypothesis:", defs["figures"].t_star_text(defs["hypothesis"]))
