"""Evaluation metrics: ranking (HR, NDCG, Recall) and explanation text metrics (see metrics.explanations)."""
