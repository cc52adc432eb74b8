"""The model and what computes with it: the objective, the training step and loop, inference,
evaluation, the anomaly scores, training frames, and how torch runs (devices, numerics, the
private torch ops beside their fallbacks, the machine record). Imports torch; nothing here
reads or writes files but through mnist_vae.io.
"""
