"""Evaluation metrics for routers, with the definitions fixed so numbers compare with the papers.

Notation: a *sweep* routes the evaluation rows at each cost weight lambda (pick = the available model with the
highest ``quality_hat - lambda * cost_hat``) and records one operating point per lambda: (mean cost, mean
realised quality). Realised quality and cost are read from ``RoutingData`` for the chosen model.

Quality-cost metrics
--------------------
* **Rank Score** (VL-RouterBench): ``C = (log2 cmax - log2 clip(cost, cmin, cmax)) / (log2 cmax - log2 cmin)``,
  ``S = (1 + beta) A C / (beta A + C)`` with ``beta = 0.1``, A the mean accuracy (0..1), cost the mean raw USD
  cost per query and (cmin, cmax) the min / max over models of each model's mean USD cost per query on the
  benchmark (:func:`cost_bounds`). ``S = 0`` when A or C is 0; ``C = 1`` when cmin == cmax (cost then carries
  no information). The reported cost-aware value is the best S over the lambda sweep (:func:`best_rank_score`).
* **nAUC** (:func:`nauc`), two documented variants; every number says which one it is:
  - ``mode="interp"`` (MMR-Bench): keep the strict Pareto frontier (:func:`pareto_frontier`), join its points
    with straight lines, trapezoid area / (max cost - min cost of the frontier).
  - ``mode="step"`` (LatentRouter's released evaluator): sort *all* operating points by cost (equal costs keep
    the best quality), replace quality by its running maximum (the best quality affordable at that budget),
    trapezoid area over those knots / (max cost - min cost of all points). Dominated points are lifted to the
    running max instead of dropped, so rises between frontier points become steps, and an expensive dominated
    point extends the curve with a flat segment at the best quality.
  A frontier with a single point (or zero cost range) has nAUC = its (best) quality, so a router that routes
  the same way at every lambda scores its accuracy; an empty one is NaN.
* **Ps** (:func:`ps`): the peak quality over the sweep.
* **QNC** (:func:`qnc`, MMR-Bench's quality-neutral cost): the lowest cost on the router's Pareto frontier whose
  quality reaches the strongest single model's quality (the model with the highest mean quality on the same
  rows, ties to the cheaper), divided by that model's mean cost. < 1 means the router matches the best model
  for less; ``inf`` when the frontier never reaches it.
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

Statistics: :func:`mean_std` (sample std, ddof=1, over seeds) and :func:`welch_t` (two-sided Welch t-test).

Modules: ``cost`` (Rank Score, frontiers, nAUC, Ps, QNC), ``prediction`` (outcome-prediction metrics),
``sweep`` (routing a lambda sweep, oracle regret, every metric of a router) and ``statistics`` (seeds, Welch).
"""
