"""Settings shared by the end-to-end tests: a tiny but real pipeline run."""

TINY = [
    "data.train_limit=4", "data.eval_limit=3", "embed.train_resolution=112", "embed.eval_resolution=154",
    "train.steps=12", "train.dim=16", "train.batch_size=8", "loss.calibration_batches=2", "knn.k=10",
    "knn.num_neighbors=3", "cluster.probe_steps=15", "linear.steps=40", "linear.lr=0.05", "cluster.kmeans_restarts=1",
    "crf.processes=2", "crf.iterations=3", "device=cpu", "cluster.method=probe", "cluster.refine_steps=5",
]
