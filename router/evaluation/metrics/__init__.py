"""Evaluation metrics for routers, with the definitions fixed so numbers compare with the papers.

Notation: a *sweep* routes the evaluation rows at each cost weight lambda (pick = the available model with the
highest ``quality_hat - lambda * cost_hat``) and records one operating point per lambda: (mean cost, mean
realised quality). Realised quality and cost are read from ``RoutingData`` for the chosen model.

Quality-cost metrics
--------------------
* **Rank Score** (VL-RouterBench): ``C = (log2 cmax - log2 clip(cost, cmin, cmax)) / (log2 cmax - log2 cmin)``,
  ``S = (1 + beta) A C / (beta A + C)``, A the mean accuracy (0..1), cost the mean raw USD cost per query.
  (cmin, cmax, beta) come from the benchmark's ``cost_bounds.json`` when an import shipped one, else cmin / cmax
  are the min (positive) / max of the per-sample USD cost matrix over every row and available model and
  beta = 0.1 (:func:`rank_bounds`, :func:`cost_bounds`). ``S = 0`` when A or C is 0; ``C = 1`` when
  cmin == cmax. The cost-aware value is the best S over the lambda sweep (:func:`best_rank_score`).
* **nAUC / Ps / QNC over the budget sweep** (MMR-Bench ``evaluate_under_cost``, :func:`budget_sweep`): budgets
  over the router's *predicted* costs; per budget and query, the best *predicted* quality among the models
  whose predicted cost fits (none fits: the cheapest predicted); realised (cost, quality) per budget. nAUC =
  trapezoid area of the strict Pareto frontier / its cost range, NaN below two frontier points (a fixed router
  has one operating point). Ps = peak quality; QNC (quality-neutral cost) = the lowest frontier cost reaching
  the strongest single model's quality (highest mean quality on the same rows, ties to the cheaper), over that
  model's mean cost (``inf`` when never reached).
* **λ view** (labelled, second): the same quantities over the lambda sweep's points: ``nauc_interp``
  (:func:`nauc` mode "interp", same NaN rule), ``nauc_step`` (LatentRouter's released evaluator: running-max
  step curve over all points, a single point gives its quality), ``ps_lambda``, ``qnc_lambda``.
* **Oracle regret** (:func:`oracle_regret`): mean over rows of ``max_avail u - u_chosen`` with
  ``u = quality - lambda * cost`` (realised, normalised cost).

Outcome-prediction metrics (predicted quality matrix vs realised quality, available entries only)
---------------------------------------------------------------------------------------------------
MSE over available entries; NDCG@K per query (gain = true quality, discount 1/log2(rank + 1), predicted order
with ties broken by model index; queries whose ideal DCG is 0 are skipped); Spearman per query
(``scipy.stats.spearmanr``; queries with < 2 available models or a constant row are skipped); Top-3 recall per
query = |best ∩ predicted top-3| / |best| with best = the available models reaching the row's max true quality
(queries where every available model ties are skipped: there is nothing to find). Each is averaged over the
queries kept; NaN when none is kept.

Statistics: :func:`mean_std` (sample std, ddof=1), :func:`ci95` (95% t interval), :func:`paired_t` (paired
t-test over splits) and :func:`welch_t` (two-sided Welch); no spread gives NaN, never p = 0.

Modules: ``cost`` (Rank Score, frontiers, nAUC, Ps, QNC), ``prediction`` (outcome-prediction metrics),
``sweep`` (routing a lambda sweep, oracle regret, every metric of a router) and ``statistics`` (seeds, Welch).
"""
