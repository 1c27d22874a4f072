import numpy as np
import pytest
import torch

from stego_core.calibration import calibrate_shifts, correlation_statistics, summarize
from stego_core.head import SegmentationHead
from stego_core.losses import ContrastiveCorrelationLoss
from stego_core.probes import ClusterProbe, train_cluster_probe, train_linear_probe
from stego_core.sampling import PairSampler
from stego_core.training import apply_head, train_head


def two_region_features(n=24, c=16, s=6, seed=0):
    """Images whose left half has feature A and right half feature B (plus noise)."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=c), rng.normal(size=c)
    f = np.empty((n, c, s, s), np.float32)
    f[:, :, :, : s // 2] = a[None, :, None, None]
    f[:, :, :, s // 2 :] = b[None, :, None, None]
    f += rng.normal(scale=0.3, size=f.shape)
    knn = np.stack([np.roll(np.arange(n), -i) for i in range(8)], axis=1)
    return f.astype(np.float16), knn


def test_sampler_partners_come_from_ranks_1_to_k():
    f, knn = two_region_features()
    s = PairSampler(f, knn, batch_size=4, num_neighbors=3, seed=0)
    for _ in range(10):
        idx, pos = s.next_indices()
        for i, p in zip(idx, pos):
            assert p in knn[i, 1:4]
    feats, feats_pos = s.next_batch()
    assert feats.dtype == torch.float32 and feats.shape == (4, 16, 6, 6)


def test_sampler_validation():
    f, knn = two_region_features()
    with pytest.raises(ValueError, match="num_neighbors"):
        PairSampler(f, knn, batch_size=4, num_neighbors=8)
    with pytest.raises(ValueError, match="batch_size"):
        PairSampler(f, knn, batch_size=100)
    with pytest.raises(ValueError, match="knn table has"):
        PairSampler(f, knn[:3], batch_size=4)


def make_loss(**shifts):
    return ContrastiveCorrelationLoss(shifts=shifts or dict(self=0.3, knn=0.3, rand=0.6),
                                      weights=dict(self=0.67, knn=0.25, rand=0.63), feature_samples=5, neg_samples=2)


def test_training_is_seeded_and_reports_through_callback():
    f, knn = two_region_features()
    seen = []
    runs = [train_head(PairSampler(f, knn, batch_size=8, seed=0), make_loss(), in_dim=16, dim=4, steps=15,
                       seed=0, log_every=5, callback=lambda step, row: seen.append(step), progress=False)
            for _ in range(2)]
    a, b = (r.head.state_dict() for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [row["step"] for row in runs[0].history] == [0, 5, 10, 14]
    assert set(runs[0].history[0]) == {"step", "loss", "loss_self", "loss_knn", "loss_rand"}
    assert seen == [0, 5, 10, 14] * 2


def test_training_separates_the_two_regions():
    f, knn = two_region_features()
    res = train_head(PairSampler(f, knn, batch_size=8, seed=0), make_loss(), in_dim=16, dim=4, steps=150, lr=5e-3,
                     seed=0, progress=False)
    code = torch.from_numpy(apply_head(res.head, f))
    code = torch.nn.functional.normalize(code, dim=1)
    left, right = code[:, :, :, :3].mean(dim=(2, 3)), code[:, :, :, 3:].mean(dim=(2, 3))
    within = torch.einsum("nchw,nc->nhw", code[:, :, :, :3], torch.nn.functional.normalize(left, dim=1)).mean()
    across = torch.nn.functional.cosine_similarity(left, right, dim=1).mean()
    assert within > 0.8 and across < 0.5


def test_bad_training_arguments():
    f, knn = two_region_features()
    with pytest.raises(ValueError, match="train.lr"):
        train_head(PairSampler(f, knn, batch_size=4), make_loss(), in_dim=16, dim=4, steps=1, lr=-1, progress=False)
    with pytest.raises(ValueError, match="head dimensions"):
        SegmentationHead(16, 0)
    with pytest.raises(ValueError, match=r"expected features \(B, 16"):
        SegmentationHead(16, 4)(torch.zeros(1, 8, 2, 2))


def test_calibrated_shifts_are_quantiles_of_each_pair_type():
    f, knn = two_region_features()
    stats = correlation_statistics(PairSampler(f, knn, batch_size=8, seed=0), batches=3, feature_samples=5)
    assert set(stats) == {"self", "knn", "rand"} and all(v.size == 3 * 8 * 5 ** 4 for v in stats.values())
    shifts = calibrate_shifts(stats, {"self": 0.5, "knn": 0.5, "rand": 0.8})
    assert shifts["rand"] == pytest.approx(float(np.quantile(stats["rand"], 0.8)))
    assert set(summarize(stats)["knn"]) == {"mean", "q25", "q50", "q75", "q80"}
    with pytest.raises(ValueError, match="quantile"):
        calibrate_shifts(stats, {"self": 1.5, "knn": 0.5, "rand": 0.8})


def test_cluster_probe_finds_the_two_directions_and_linear_probe_learns_labels():
    f, _ = two_region_features()
    probe = train_cluster_probe(f, 2, steps=100, lr=5e-2, progress=False)
    assign = probe.cosine(torch.from_numpy(f.astype(np.float32))).argmax(1)
    assert (assign[:, :, :3] != assign[:, :, 3:].flip(-1)).float().mean() > 0.95
    labels = np.zeros((len(f), 12, 12), np.uint8)
    labels[:, :, 6:] = 1
    labels[:, 0, :] = 255
    lin = train_linear_probe(f, labels, 2, steps=100, lr=5e-2, progress=False)
    logits = torch.nn.functional.interpolate(lin(torch.from_numpy(f.astype(np.float32))), size=(12, 12), mode="bilinear")
    acc = (logits.argmax(1).numpy() == labels)[:, 1:].mean()
    assert acc > 0.9
    with pytest.raises(ValueError, match="all void"):
        train_linear_probe(f, np.full_like(labels, 255), 2, steps=1, progress=False)
    with pytest.raises(ValueError, match="num_clusters"):
        ClusterProbe(4, 0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_calibration_and_training_run_on_cuda():
    f, knn = two_region_features()
    sampler = PairSampler(f, knn, batch_size=8, seed=0, device="cuda")
    stats = correlation_statistics(sampler, batches=2, feature_samples=5)
    assert all(np.isfinite(v).all() for v in stats.values())
    res = train_head(sampler, make_loss(), in_dim=16, dim=4, steps=5, seed=0, progress=False)
    assert next(res.head.parameters()).is_cuda and np.isfinite(res.history[-1]["loss"])


def test_ema_teacher_is_the_moving_average_of_the_student_and_is_returned():
    from stego_core.training import EmaTeacher

    student = SegmentationHead(4, 2)
    teacher = EmaTeacher(student, 0.9)
    assert teacher.warmup == 10 and not teacher.model.training
    before = {k: v.clone() for k, v in teacher.model.state_dict().items()}
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    teacher.update(student)
    after, now = teacher.model.state_dict(), student.state_dict()
    assert all(torch.allclose(after[k], 0.9 * before[k] + 0.1 * now[k]) for k in after)
    # train_head with a teacher returns it: a different, smoother head than the student alone
    f, knn = two_region_features()
    plain = train_head(PairSampler(f, knn, batch_size=8, seed=0), make_loss(), in_dim=16, dim=4, steps=12, seed=0,
                       progress=False)
    ema = train_head(PairSampler(f, knn, batch_size=8, seed=0), make_loss(), in_dim=16, dim=4, steps=12, seed=0,
                     progress=False, ema_decay=0.5)
    a, b = plain.head.state_dict(), ema.head.state_dict()
    assert not all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match=r"train.ema_decay must be in \[0, 1\)"):
        train_head(PairSampler(f, knn, batch_size=8, seed=0), make_loss(), in_dim=16, dim=4, steps=1, ema_decay=1.0)


def test_soft_labels_are_class_shares_of_non_void_pixels():
    from stego_core.probes import soft_labels

    labels = np.array([[[0, 0, 1, 255], [0, 2, 255, 255], [1, 1, 1, 1], [1, 1, 1, 1]]], dtype=np.uint8)
    shares, weight = soft_labels(labels, 3, 2)
    assert shares.shape == (1, 3, 2, 2) and weight.shape == (1, 2, 2)
    assert np.allclose(shares[0, :, 0, 0], [0.75, 0, 0.25]) and weight[0, 0, 0] == 1.0  # top-left: 0 0 / 0 2
    assert np.allclose(shares[0, :, 0, 1], [0, 1, 0]) and weight[0, 0, 1] == 0.25  # top-right: one 1, three void
    assert np.allclose(shares[0, :, 1, 0], [0, 1, 0]) and weight[0, 1, 0] == 1.0


def test_pooled_linear_loss_equals_the_full_resolution_loss_on_flat_logits():
    """With 1x1 feature maps the logits are flat over the image, so the cell-pooled cross-entropy is
    exactly the per-pixel one: both probes take the same steps and end equal."""
    rng = np.random.default_rng(0)
    f = rng.normal(size=(12, 5, 1, 1)).astype(np.float32)
    labels = rng.integers(0, 3, size=(12, 8, 8)).astype(np.uint8)
    labels[:, :2] = 255
    full = train_linear_probe(f, labels, 3, steps=20, batch_size=4, lr=0.05, progress=False)
    pooled = train_linear_probe(f, labels, 3, steps=20, batch_size=4, lr=0.05, progress=False, loss_resolution=4)
    a, b = full.state_dict(), pooled.state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_the_pooled_probe_is_bitwise_the_plain_formula_on_real_labels(camvid_root, tmp_path):
    """The probe's label shares are pooled once, one class at a time, stored as one table and read back per
    batch; it must train exactly as the plain formula: a one-hot of every label, pooled, shares and weights
    as two arrays (real CamVid crops: their void borders and thin classes are where summation order shows)."""
    import torch.nn.functional as F

    from stego_core.data import dataset_samples, write_crops
    from stego_core.probes import LinearProbe, _batches

    write_crops(dataset_samples("camvid", "train", camvid_root, limit=12), tmp_path, resolution=112, num_classes=11,
                label_map="camvid11", progress=False)
    labels = np.load(tmp_path / "labels.npy", mmap_mode="r")
    f = np.random.default_rng(0).standard_normal((len(labels), 7, 8, 8)).astype(np.float32)
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    valid = y != 255
    onehot = F.one_hot(y.clamp(0, 10) * valid, 11).permute(0, 3, 1, 2).float() * valid[:, None]
    counts = F.adaptive_avg_pool2d(onehot, 16)
    frac = counts.sum(1)
    shares = (counts / frac.clamp_min(1e-12)[:, None]).half().float()
    weight = frac.half().float()
    torch.manual_seed(0)
    reference = LinearProbe(7, 11)
    opt = torch.optim.Adam(reference.parameters(), lr=5e-3)
    for idx in _batches(len(f), 16, 30, 0):
        logits = F.interpolate(reference(torch.from_numpy(f[idx])), size=(16, 16), mode="bilinear", align_corners=False)
        per_cell = -(shares[idx] * F.log_softmax(logits, dim=1)).sum(1)
        loss = (per_cell * weight[idx]).sum() / weight[idx].sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    probe = train_linear_probe(f, labels, 11, steps=30, batch_size=16, lr=5e-3, seed=0, loss_resolution=16, progress=False)
    assert all(torch.equal(probe.state_dict()[k], reference.state_dict()[k]) for k in reference.state_dict())
