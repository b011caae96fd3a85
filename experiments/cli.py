"""The ``ovt`` command line (ARCHITECTURE.md, "CLI contract")."""

from __future__ import annotations

import argparse
import sys


def _default_table() -> str:
    import jax.numpy as jnp

    from theory import measure, protocol, tasks

    d = 32
    s = tasks.power_law_spectrum(d, 1.0, 1.0)
    T = jnp.logspace(-1, 4, 11)
    c = protocol.closed_form_curves(s, tasks.reversed_spectrum(s), 1e-6, T, gamma=0.2, sigma1=d**-0.5,
                                    sigma2=d**-0.5, d_in=d, h=d, d_out=d, tau=2.0)
    rows = [f"{'T':>10} {'L_A':>9} {'L_A+noise':>10} {'L_A after ft':>12} {'L_B after ft':>12}"]
    for i in range(len(T)):
        rows.append(f"{float(T[i]):10.3g} {float(c.pretrain_loss[i]):9.4f} {float(c.perturbed_pretrain_loss[i]):10.4f}"
                    f" {float(c.finetuned_pretrain_loss[i]):12.4f} {float(c.finetuned_finetune_loss[i]):12.4f}")
    fine_T = jnp.logspace(-1, 4, 201)
    fine = protocol.closed_form_curves(s, tasks.reversed_spectrum(s), 1e-6, fine_T, gamma=0.2, sigma1=d**-0.5,
                                       sigma2=d**-0.5, d_in=d, h=d, d_out=d, tau=2.0)
    rows.append(f"T* (gaussian, gamma=0.2) = {float(measure.inflection(fine_T, fine.perturbed_pretrain_loss)):.3g}; "
                f"T* (fine-tuning, tau=2) = {float(measure.inflection(fine_T, fine.finetuned_pretrain_loss)):.3g}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ovt", description="Catastrophic overtraining: theory and LLM validation.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("reproduce", help="the main job").add_argument("--out", default="results")
    args = parser.parse_args(argv)
    if args.command == "reproduce":
        print(_default_table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
