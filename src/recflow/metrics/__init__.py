"""Every metric recflow reports, on numpy arrays (no torch, no Kedro): reports, benchmarks
and notebooks share them.

* `ranking`: AUC, logloss, GAUC, `evaluate_scores` (a score column's whole row);
* `calibration`: mean prediction / rate, reliability bins, ECE;
* `retrieval`: Recall@K, NDCG@K, coverage, the retrieval report.
"""
