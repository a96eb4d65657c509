"""Evaluation, one implementation for every method.

  lm_eval   exact match of LMs on a DoD's tasks (gold instruction, input alone, few-shot)
  metrics   ROUGE-L (stemmed), class recall/precision/F1 of instructions, max over references
  minilm    all-MiniLM-L6-v2 sentence embeddings in JAX (cosine similarity of texts)
"""
