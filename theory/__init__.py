"""Linear transfer-learning theory of catastrophic overtraining, in pure JAX.

Modules follow docs/THEORY.md one concept each: ``tasks`` (teachers A, B), ``network`` (depth-L linear
networks and their init), ``closed_form`` (per-mode logistic laws), ``simulate`` (gradient flow and
optax optimisers over ``lax.scan``), ``mitigation`` (weight decay as a loss term, SAM's gradient),
``perturbation`` (Gaussian noise, exact and Monte-Carlo), ``finetune`` (fine-tuning with an optional L2
pull and replay of A), ``quantization`` (per-channel rounding and its exact excess), ``multimodal`` (a
modality added through a projector, stage 1 in closed form), ``measure`` (sharpness, trace,
inflection), ``protocol`` (the whole pre-train -> modify -> measure pipeline over a grid of
pre-training times), ``linear_model`` (the linear model on a measured axis), ``linear_fit`` (it fitted
to a base curve or a whole family) and ``link`` (its quadratic excess mapped to log-loss; the power-law
decomposition is ``analysis.phenomenology``).
No module does file or terminal I/O. Every public function checks its arguments where they are concrete
(``_checks``): a bad one raises one ValueError naming it; jitted and vmapped calls pass through.
"""
