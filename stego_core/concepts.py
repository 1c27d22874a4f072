"""A concept clusterbook found by maximising modularity (after CAUSE, Kim et al., Pattern Recognition 2024).

The frozen backbone's patch tokens ``x_i`` (unit vectors, ``(n, C)``) form a graph with the cosine affinity
``A_ij = max(0, <x_i, x_j>)``, degrees ``d_i = sum_j A_ij`` and ``2m = sum_i d_i``. ``K`` concept vectors
``M`` ``(K, C)`` assign token ``i`` softly, ``P_ik = softmax_k(<x_i, m_k> / |m_k| / tau)``, and the soft
modularity of that assignment is

    Q(P) = 1/(2m) * sum_ij (A_ij - d_i d_j / 2m) * sum_k P_ik P_jk
         = ( tr(P^T A P) - |d^T P|^2 / 2m ) / 2m,

which is Newman's modularity when ``P`` is a hard (one-hot) partition. The clusterbook is fitted by gradient
ascent on ``Q`` (Adam) over random mini-batches of a token sample; a token's concept is then its most
cosine-similar concept vector (:func:`assign_concepts`). Concepts that win no token are simply unused: the
modularity, not ``K``, decides how many there are.

Example:
    >>> book, info = fit_clusterbook(tokens, num_concepts=256, steps=200, seed=0)
    >>> ids = assign_concepts(torch.from_numpy(tokens), torch.from_numpy(book))
"""
from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)


def affinity(x: torch.Tensor) -> torch.Tensor:
    """The cosine affinity graph ``max(0, cos(x_i, x_j))`` ``(n, n)`` of tokens ``x`` ``(n, C)``."""
    x = F.normalize(x, dim=1, eps=1e-10)
    return (x @ x.T).clamp(min=0.0)


def modularity(adjacency: torch.Tensor, assignment: torch.Tensor) -> torch.Tensor:
    """Soft modularity ``Q`` (scalar) of an assignment ``P`` ``(n, K)`` (rows sum to 1) on a graph ``A`` ``(n, n)``
    (symmetric, non-negative, with some edge): see the module docstring."""
    two_m = adjacency.sum()
    degree = adjacency.sum(dim=1)
    within = (assignment * (adjacency @ assignment)).sum()
    expected = (degree @ assignment).square().sum() / two_m
    return (within - expected) / two_m


def soft_assignment(x: torch.Tensor, clusterbook: torch.Tensor, temperature: float) -> torch.Tensor:
    """``softmax_k(cos(x_i, m_k) / temperature)`` ``(n, K)``."""
    cos = F.normalize(x, dim=1, eps=1e-10) @ F.normalize(clusterbook, dim=1, eps=1e-10).T
    return torch.softmax(cos / temperature, dim=1)


def assign_concepts(x: torch.Tensor, clusterbook: torch.Tensor) -> torch.Tensor:
    """Concept ids ``(n,)`` int64: each token's most cosine-similar concept vector."""
    return (F.normalize(x, dim=1, eps=1e-10) @ F.normalize(clusterbook, dim=1, eps=1e-10).T).argmax(dim=1)


def fit_clusterbook(
    tokens: np.ndarray,
    *,
    num_concepts: int,
    steps: int = 200,
    batch: int = 1024,
    lr: float = 1e-2,
    temperature: float = 0.1,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> tuple[np.ndarray, dict]:
    """Fit ``num_concepts`` concept vectors ``(K, C)`` float32 to ``tokens`` ``(n, C)`` by maximising the soft
    modularity of mini-batches of ``batch`` tokens for ``steps`` Adam steps; initialised at ``K`` distinct
    tokens. Deterministic for a seed on CPU; no global random state is touched. Returns the clusterbook and
    ``{"modularity", "modularity_init", "used_concepts", ...}`` (measured on one fixed batch).

    Raises:
        ValueError: fewer tokens than concepts, or a bad setting (the message names the field).
    """
    tokens = np.asarray(tokens, dtype=np.float32)
    if tokens.ndim != 2:
        raise ValueError(f"tokens must be a (n, C) table, got shape {tokens.shape}")
    n = len(tokens)
    if not 2 <= num_concepts <= n:
        raise ValueError(f"concepts.num_concepts={num_concepts} must be in [2, {n}] (the tokens sampled); "
                         "lower it or raise concepts.tokens")
    if steps < 0 or batch < 2 or lr <= 0 or temperature <= 0:
        raise ValueError(f"concepts: steps >= 0, batch_tokens >= 2, lr > 0 and temperature > 0 are needed, got "
                         f"steps={steps}, batch_tokens={batch}, lr={lr}, temperature={temperature}")
    device = torch.device(device)
    rng = np.random.default_rng(seed)
    batch = min(batch, n)
    x_all = torch.from_numpy(tokens)
    init = x_all[np.sort(rng.choice(n, size=num_concepts, replace=False))]
    book = torch.nn.Parameter(F.normalize(init, dim=1, eps=1e-10).to(device))
    opt = torch.optim.Adam([book], lr=lr)
    probe = x_all[np.sort(rng.choice(n, size=batch, replace=False))].to(device)  # fixed batch for the summary
    probe_graph = affinity(probe)

    def score() -> float:
        with torch.no_grad():
            return float(modularity(probe_graph, soft_assignment(probe, book, temperature)))

    start = score()
    for _ in range(steps):
        x = x_all[np.sort(rng.choice(n, size=batch, replace=False))].to(device)
        loss = -modularity(affinity(x), soft_assignment(x, book, temperature))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    out = F.normalize(book.detach(), dim=1, eps=1e-10).cpu()
    ids = assign_concepts(x_all, out)
    with torch.no_grad():
        hard = float(modularity(probe_graph, F.one_hot(assign_concepts(probe.cpu(), out), num_concepts).float().to(device)))
    info = {"num_concepts": num_concepts, "tokens": n, "steps": steps, "modularity_init": start,
            "modularity": score(), "modularity_hard": hard, "used_concepts": int(torch.unique(ids).numel())}
    logger.info("concept clusterbook: %d of %d concepts used, soft modularity %.4f -> %.4f (hard %.4f) on %d tokens",
                info["used_concepts"], num_concepts, start, info["modularity"], hard, n)
    return out.numpy().astype(np.float32), info
