"""Evaluation metrics: ranking (HR, NDCG, Recall) and, later, text metrics."""
