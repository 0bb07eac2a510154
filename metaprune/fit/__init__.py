"""Fit: regressors that learn the harvest target from per-weight features, saved in safe formats.

Library entry points (each CLI command is one of them):

- ``fit_model(stores, FitConfig(...), name=, models_dir=, force=)`` → ``FitResult`` (``metaprune fit``)
- ``list_models(models_dir)`` (``metaprune models``), ``load_model(dir)`` → ``LoadedModel``
- ``ModelCard``: what a saved model is and where it applies; ``from_fit`` and ``to_meta`` write
  ``meta.json``, ``read`` reads it (records of older versions included)
- ``learned_scores(model_dir, net, mask, data, seed)``: the ``learned:DIR`` scorer of method strings; the
  scorer registry imports ``fit.learned`` (which registers it) the first time a ``learned:`` name is looked
  up (``metaprune.PREFIX_PROVIDERS``), so importing this package costs no torch (``fit.config`` is read by
  the CLI while it registers its commands)

Decisions and caps (all overridable with ``--option KEY=VALUE``):

- Targets, all in [0, 1]: ``round`` (default) = ``target_round / (levels + 1)``, the level at which
  iterative SynFlow removed the weight (survivors 1) — a ranking target that knows about every sparsity
  on the way; ``survive`` = outlives the next level; ``mask`` = in the final ticket; ``score`` = the
  target's final SynFlow score min-max per seed.
- States: ``dense`` (θ0, default) or ``trajectory``: every stored state of the target's way down (the
  alive weights under its mask after s levels), with ``round`` and ``survive`` counted from the state.
- Every fit also fits the target's per-layer budget (``fit.budget``; ``learned:DIR#learned``).
- One job per module: ``core`` (``fit_model``), ``split`` (the seed split), ``sampler`` (units, the seed
  reader and the streamed ``TrainData``), ``assess`` (held-out metrics), ``cv`` (cross-validation and grid
  search), ``persist`` (the card and the payload), ``learned`` (the scorer), ``budget``.
- Preprocessing is per network and therefore never fitted on held-out seeds: ``minmax`` (default, the
  thesis), ``rank`` (per-layer rank; makes a model usable on other architectures), ``none``.
- Split by seed: default test = the last quarter of the complete seeds (at least one); a seed in both
  lists is an error; ``cv=K`` adds GroupKFold by seed on the training seeds.
- Memory: ``linear``, ``sgd`` and ``mlp`` stream one seed at a time (up to 256 MiB of preprocessed
  training seeds are cached between passes); ``tree``/``forest`` learn from at most ``max_rows`` =
  1,000,000 rows and ``lightgbm`` from at most 2,000,000, drawn uniformly (the same share of every seed).
  The forest is capped at 50 trees of depth ≤ 12, leaves ≥ 50, 10 % of the rows per tree.
- ``mlp``: the thesis's F-64-32-1 ReLU/sigmoid/MSE, but Adam lr 1e-3 (thesis: SGD lr 0.001, which barely
  trains in a few epochs; ``optimizer=sgd lr=0.001`` reproduces it), 5 epochs, batch 2048, on
  ``training.resolve_device`` (CUDA when present).
- ``lightgbm``: objective ``regression`` (default), ``cross_entropy``, ``binary`` or ``lambdarank``. One
  query cannot be a network (266,200 weights for LeNet-300-100; LightGBM refuses queries above 10,000 rows
  and its pairwise lambdas are O(n²) per query), so a query is at most 10,000 alive weights of one layer
  in one state of one seed. ``--sample-weight balanced`` weighs every removal level the same.
- Threads: one by default (``threads=1``, ``--threads``) for BLAS, OpenMP, PyTorch, the forest and
  LightGBM: the matrices are thin, and on a busy 2-core machine extra threads spin ruinously (measured:
  XᵀX of 266,200 x 23 in 8 s with two OpenBLAS threads vs 0.01 s with one; an MLP epoch 14 s vs 0.15 s).
- Train metrics (R², MSE) are computed on at most 8 training seeds.
"""

