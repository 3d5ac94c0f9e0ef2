"""The paper's equations, checked numerically against values computed independently on tiny tensors."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from deepacc.karyotype import CLASS_NAMES, adjacency_matrix, group_of
from deepacc.modeling import (
    DeepACCClassifier,
    DeepACCHead,
    aam_loss,
    additive_angular_margin,
    box_regression_loss,
    gia_loss,
    select_detections,
    select_local_centres,
    siamese_logits,
)
from deepacc.modeling.inference import image_prediction
from deepacc.modeling.prediction import to_prediction


# ----------------------------------------------------------------------------- Eq. 1: AAM loss
def _aam_by_hand(cos_row, label, s, m):
    """-log softmax with s*cos(theta_y + m) on the label, by angles (not the trig identity)."""
    theta = math.acos(cos_row[label])
    if theta + m <= math.pi:
        target = math.cos(theta + m)
    else:
        target = cos_row[label] - m * math.sin(m)
    logits = [s * (target if j == label else c) for j, c in enumerate(cos_row)]
    return -(logits[label] - math.log(sum(math.exp(v) for v in logits)))


def test_aam_loss_matches_hand_computation():
    cos = torch.tensor([[0.6, 0.8, 0.0], [0.1, -0.3, 0.9], [-0.2, 0.5, 0.4]])
    labels = torch.tensor([0, 2, 1])
    s, m = 2.0, 0.5
    expected = sum(_aam_by_hand(cos[i].tolist(), int(labels[i]), s, m) for i in range(3)) / 3
    assert aam_loss(cos, labels, s, m).item() == pytest.approx(expected, rel=1e-5)
    # first row, written out: theta = acos(0.6) = 0.92730, cos(theta + 0.5) = 0.14295
    row0 = -math.log(math.exp(2 * 0.142957) / (math.exp(2 * 0.142957) + math.exp(1.6) + math.exp(0.0)))
    assert _aam_by_hand([0.6, 0.8, 0.0], 0, s, m) == pytest.approx(row0, rel=1e-4)


def test_aam_paper_hyperparameters_and_margin_only_on_ground_truth():
    torch.manual_seed(0)
    cos = torch.rand(5, 25) * 2 - 1
    labels = torch.tensor([0, 3, 24, 7, 23])
    out = additive_angular_margin(cos, labels, 0.25)
    mask = F.one_hot(labels, 25).bool()
    assert torch.equal(out[~mask], cos[~mask])  # other logits untouched
    theta = torch.acos(cos[mask])
    ok = theta + 0.25 <= math.pi
    assert torch.allclose(out[mask][ok], torch.cos(theta[ok] + 0.25), atol=1e-6)
    expected = sum(_aam_by_hand(cos[i].tolist(), int(labels[i]), 64.0, 0.25) for i in range(5)) / 5
    assert aam_loss(cos, labels, 64.0, 0.25).item() == pytest.approx(expected, rel=1e-4)


def test_aam_fallback_when_theta_plus_m_exceeds_pi():
    cos = torch.tensor([[-0.95, 0.3]])
    out = additive_angular_margin(cos, torch.tensor([0]), 0.5)
    assert math.acos(-0.95) + 0.5 > math.pi
    assert out[0, 0].item() == pytest.approx(-0.95 - 0.5 * math.sin(0.5), abs=1e-6)
    assert out[0, 1].item() == pytest.approx(0.3)


def test_aam_margin_zero_is_normalised_softmax():
    cos = torch.tensor([[0.2, 0.7, -0.1]])
    assert aam_loss(cos, torch.tensor([1]), 10.0, 0.0).item() == pytest.approx(
        F.cross_entropy(10 * cos, torch.tensor([1])).item(), rel=1e-6)


def test_aam_runs_in_fp32_under_autocast():
    clf = DeepACCClassifier(8, 24, siamese_enabled=False, gia_enabled=False)
    x = torch.randn(6, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = clf(x.bfloat16(), [6])
        loss = clf.losses(out, torch.tensor([0, 1, 2, 24, 24, 5]))["loss_aam"]
    assert out.cos.dtype == torch.float32 and loss.dtype == torch.float32
    ref = F.normalize(x.bfloat16().float(), dim=1) @ F.normalize(clf.margin_branch.weight, dim=1).t()
    assert torch.allclose(out.cos, ref, atol=1e-6)


def test_margin_branch_normalises_weights_inside_the_graph():
    clf = DeepACCClassifier(4, 24, siamese_enabled=False, gia_enabled=False)
    w0 = clf.margin_branch.weight.detach().clone()
    out = clf(torch.randn(3, 4), [3])
    clf.losses(out, torch.tensor([1, 2, 24]))["loss_aam"].backward()
    assert torch.equal(clf.margin_branch.weight.detach(), w0)  # nothing renormalised in place
    assert clf.margin_branch.weight.grad is not None and clf.margin_branch.weight.grad.abs().sum() > 0


# ------------------------------------------------------------------------- Eq. 2: siamese branch
def _siamese_by_loops(x, counts, w_norm, bias, probs, delta):
    k = w_norm.shape[0] - 1
    out, start = [], 0
    for n in counts:
        if n == 0:
            continue
        xs, ps = x[start:start + n], probs[start:start + n]
        centres = []
        for j in range(k):
            i = int(ps[:, j].argmax())
            centres.append(xs[i] / xs[i].norm() if ps[i, j] > delta else w_norm[j])
        centres.append(w_norm[k])
        w_i = torch.stack(centres)
        for i in range(n):
            out.append(w_i @ xs[i] + bias)
        start += n
    return torch.stack(out)


def test_siamese_centres_above_and_below_delta_by_hand():
    # K = 2 classes + background, D = 2; image 0 has 3 proposals, image 1 has 1.
    x = torch.tensor([[3.0, 4.0], [1.0, 0.0], [0.0, 2.0], [0.0, -5.0]])
    w = F.normalize(torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 0.0]]), dim=1)
    bias = torch.tensor([0.1, 0.2, 0.3])
    probs = torch.tensor([[0.90, 0.05, 0.05],   # class 0 most confident at 0.9 > delta -> local
                          [0.20, 0.40, 0.40],   # class 1 best is 0.4 <= delta -> global W_M,1
                          [0.10, 0.30, 0.60],
                          [0.70, 0.80, 0.10]])  # image 1: both classes local = x3 / |x3|
    top_score, top_index = select_local_centres(probs, [3, 1])
    assert top_index.tolist() == [[0, 1], [3, 3]]
    assert torch.allclose(top_score, torch.tensor([[0.9, 0.4], [0.7, 0.8]]))
    logits = siamese_logits(x, [3, 1], w, bias, top_score, top_index, threshold=0.5)
    # proposal 1 (1, 0) of image 0: class 0 centre = (3,4)/5 -> 0.6; class 1 = W_M,1 -> 1/sqrt2; bg -> -1
    assert logits[1].tolist() == pytest.approx([0.6 + 0.1, 1 / math.sqrt(2) + 0.2, -1.0 + 0.3], abs=1e-6)
    # proposal 0 against its own normalised feature: |x0| = 5
    assert logits[0, 0].item() == pytest.approx(5.0 + 0.1, abs=1e-6)
    # image 1: both centres are (0, -1): x3 . c = 5 (features are NOT normalised)
    assert logits[3].tolist() == pytest.approx([5.1, 5.2, 0.3], abs=1e-6)
    assert torch.allclose(logits, _siamese_by_loops(x, [3, 1], w, bias, probs, 0.5), atol=1e-6)


def test_siamese_matches_loop_reference_with_missing_classes_and_empty_image():
    torch.manual_seed(1)
    counts = [5, 0, 7, 1]
    r, k, d = sum(counts), 24, 16
    x = torch.randn(r, d) * 3
    w = F.normalize(torch.randn(k + 1, d), dim=1)
    bias = torch.randn(k + 1)
    probs = torch.softmax(torch.randn(r, k + 1) * 4, dim=1)
    probs[:, 5] = 0.0  # class 5 missing everywhere -> global centre
    top_score, top_index = select_local_centres(probs, counts)
    got = siamese_logits(x, counts, w, bias, top_score, top_index, threshold=0.5)
    ref = _siamese_by_loops(x, [c for c in counts], w, bias, probs, 0.5)
    assert torch.allclose(got, ref, atol=1e-5)
    # delta above every probability: all classes fall back to the global weights
    glob = siamese_logits(x, counts, w, bias, top_score, top_index, threshold=1.0)
    assert torch.allclose(glob, x @ w.t() + bias, atol=1e-5)


def test_siamese_background_keeps_global_weight_and_bias_starts_at_zero():
    clf = DeepACCClassifier(4, 24, gia_enabled=False)
    assert torch.equal(clf.siamese_bias, torch.zeros(25))
    x = torch.randn(6, 4)
    out = clf(x, [6])
    w = clf.margin_branch.normalized_weight()
    assert torch.allclose(out.logits[:, 24], x @ w[24], atol=1e-5)


def test_detach_centres_stops_gradient_through_local_centres():
    torch.manual_seed(2)
    x = torch.randn(4, 3)
    w = F.normalize(torch.randn(3, 3), dim=1)
    probs = torch.tensor([[0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4], [0.2, 0.2, 0.6]])
    top_score, top_index = select_local_centres(probs, [4])
    grads = {}
    for detach in (True, False):
        xx = x.clone().requires_grad_(True)
        siamese_logits(xx, [4], w, torch.zeros(3), top_score, top_index, 0.5, detach).sum().backward()
        grads[detach] = xx.grad
    w_i = torch.stack([x[0] / x[0].norm(), x[1] / x[1].norm(), w[2]])
    # detached: d/dx_i sum_j (x_i . W_I,j) = sum_j W_I,j for every proposal
    assert torch.allclose(grads[True], w_i.sum(0).expand(4, 3), atol=1e-5)
    # not detached: proposals 2, 3 are no centre (same gradient); 0 and 1 get the centre path too
    assert torch.allclose(grads[False][2:], grads[True][2:], atol=1e-5)
    assert not torch.allclose(grads[False][:2], grads[True][:2], atol=1e-4)


# ----------------------------------------------------------------------------- Eq. 3: GIA loss
def test_gia_loss_by_hand():
    # 3 classes, classes 0 and 1 in one group, class 2 alone; one image with 3 proposals.
    adj = torch.tensor([[False, True, False], [True, False, False], [False, False, False]])
    probs = torch.tensor([[0.7, 0.2, 0.05, 0.05],
                          [0.1, 0.6, 0.2, 0.1],
                          [0.1, 0.1, 0.1, 0.7]])
    labels = torch.tensor([0, 1, 3])  # 3 = background
    ref = probs[torch.tensor([[0, 1, 1]])]  # most confident proposal of class 0, 1, 2 -> rows 0, 1, 1
    img = torch.tensor([0, 0, 0])
    m0, m1 = probs[0], probs[1]
    dot01 = float(m0 @ m1)  # 0.07 + 0.12 + 0.01 + 0.005 = 0.205
    assert dot01 == pytest.approx(0.205)
    # positive 0 (class 0): adjacent class 1 -> M(x0).M_1 ; positive 1 (class 1): class 0 -> M(x1).M_0
    expected = (dot01 + dot01) / 2
    assert gia_loss(probs, labels, ref, img, adj).item() == pytest.approx(expected, rel=1e-6)


def test_gia_in_classifier_uses_denver_groups_by_name():
    torch.manual_seed(3)
    clf = DeepACCClassifier(8, 24, gia_weight=1.0)
    x = torch.randn(10, 8)
    labels = torch.tensor([0, 1, 2, 8, 22, 23, 24, 24, 20, 6])
    out = clf(x, [6, 4])
    got = clf.losses(out, labels)["loss_gia"].item()
    p, top, expected, n_pos = out.margin_probs, out.top_index, 0.0, 0
    img = [0] * 6 + [1] * 4
    for i, y in enumerate(labels.tolist()):
        if y == 24:
            continue
        n_pos += 1
        for j in range(24):
            if j != y and group_of(CLASS_NAMES[j]) == group_of(CLASS_NAMES[y]):
                expected += float(p[i] @ p[top[img[i], j]])
    assert got == pytest.approx(expected / n_pos, rel=1e-5)
    assert adjacency_matrix()[CLASS_NAMES.index("X"), CLASS_NAMES.index("7")]  # X is in group C
    assert adjacency_matrix()[CLASS_NAMES.index("Y"), CLASS_NAMES.index("21")]  # Y is in group G


# ------------------------------------------------------------------- total loss and empty batches
def test_loss_weights_follow_eq4():
    torch.manual_seed(4)
    x, labels = torch.randn(8, 6), torch.tensor([0, 1, 2, 24, 3, 24, 4, 5])
    a = DeepACCClassifier(6, 24, aam_weight=1.0, siamese_weight=1.0, gia_weight=1.0)
    b = DeepACCClassifier(6, 24, aam_weight=0.1, siamese_weight=1.0, gia_weight=0.1)
    b.load_state_dict(a.state_dict())
    la, lb = a.losses(a(x, [8]), labels), b.losses(b(x, [8]), labels)
    assert lb["loss_aam"].item() == pytest.approx(0.1 * la["loss_aam"].item(), rel=1e-5)
    assert lb["loss_siamese"].item() == pytest.approx(la["loss_siamese"].item(), rel=1e-5)
    assert lb["loss_gia"].item() == pytest.approx(0.1 * la["loss_gia"].item(), rel=1e-5)


@pytest.mark.parametrize("flags", [
    dict(aam_enabled=False, siamese_enabled=False, gia_enabled=False),   # (a)/(b)
    dict(aam_enabled=True, siamese_enabled=False, gia_enabled=False),    # (c)
    dict(aam_enabled=False, siamese_enabled=True, gia_enabled=False),    # (d)
    dict(aam_enabled=True, siamese_enabled=True, gia_enabled=False),     # (e)
    dict(aam_enabled=True, siamese_enabled=True, gia_enabled=True),      # (f)
])
@pytest.mark.parametrize("counts,labels", [([0, 0], []), ([3, 2], [24, 24, 24, 24, 24])])
def test_empty_batches_give_zero_losses_that_backpropagate(flags, counts, labels):
    head = DeepACCHead(4, 2, num_classes=24, fc_dim=16, num_fc=2, **flags)
    pooled = torch.randn(sum(counts), 4, 2, 2)
    out, deltas = head(pooled, counts)
    labels = torch.tensor(labels, dtype=torch.long)
    losses = head.classifier.losses(out, labels)
    losses["loss_box_reg"] = box_regression_loss(deltas, torch.zeros(len(labels), 4), labels, 24)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    for name, p in head.named_parameters():
        assert p.grad is not None, name
    if sum(counts) == 0 or flags.get("gia_enabled"):
        assert losses.get("loss_gia", torch.tensor(0.0)).item() == 0.0
    assert losses["loss_box_reg"].item() == 0.0


def test_decoupled_streams_share_no_weights():
    sep = DeepACCHead(4, 2, num_classes=24, fc_dim=16, decoupled=True)
    shared = DeepACCHead(4, 2, num_classes=24, fc_dim=16, decoupled=False)
    assert sep.box_head.reg_stream is not None and shared.box_head.reg_stream is None
    ids = {id(p) for p in sep.box_head.cls_stream.parameters()}
    assert not ids & {id(p) for p in sep.box_head.reg_stream.parameters()}
    x = torch.randn(3, 4, 2, 2)
    c, r = sep.box_head(x)
    assert not torch.allclose(c, r)
    c, r = shared.box_head(x)
    assert c is r


def test_box_regression_loss_by_hand():
    pred = torch.zeros(3, 2 * 4)
    pred[0, 4:8] = torch.tensor([1.0, 0.0, 0.0, 0.0])  # class 1 deltas of proposal 0
    tgt = torch.tensor([[0.5, 0.0, 0.0, 2.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    labels = torch.tensor([1, 2, 0])  # 2 = background for K = 2
    # L1 (beta 0): |1-0.5| + |0-2| for proposal 0, class 1; proposal 2, class 0: 0; normalised by 3
    assert box_regression_loss(pred, tgt, labels, 2, beta=0.0).item() == pytest.approx(2.5 / 3)
    # smooth L1 beta 1: 0.5*0.5^2 + (2 - 0.5) = 1.625
    assert box_regression_loss(pred, tgt, labels, 2, beta=1.0).item() == pytest.approx(1.625 / 3)


# ------------------------------------------------------------------------------ detections
def test_top1_keeps_only_the_best_class_of_each_proposal():
    boxes = torch.tensor([[[0, 0, 10, 10], [1, 1, 11, 11], [2, 2, 12, 12]],
                          [[50, 50, 60, 60], [50, 50, 60, 60], [50, 50, 60, 60]]], dtype=torch.float)
    probs = torch.tensor([[0.6, 0.3, 0.05, 0.05], [0.1, 0.2, 0.5, 0.2]])
    std = select_detections(boxes, probs, (100, 100), score_thresh=0.05, nms_thresh=0.5, topk=100)
    top = select_detections(boxes, probs, (100, 100), score_thresh=0.05, nms_thresh=0.5, topk=100, top1=True)
    assert sorted(zip(std.proposal_index.tolist(), std.classes.tolist())) == [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2)]
    assert sorted(zip(top.proposal_index.tolist(), top.classes.tolist())) == [(0, 0), (1, 2)]
    assert top.boxes[top.classes == 2].tolist() == [[50, 50, 60, 60]]
    assert top.scores.tolist() == pytest.approx([0.6, 0.5])


def _three_proposals():
    """K = 3: proposal 0 prefers class 0, proposal 1 class 2, proposal 2 is background (top-1 class 1
    at 0.03, below the threshold). Class-specific boxes differ by class."""
    boxes = torch.tensor([[[0, 0, 10, 10], [1, 1, 11, 11], [2, 2, 12, 12]],
                          [[50, 50, 60, 60], [51, 51, 61, 61], [52, 52, 62, 62]],
                          [[80, 80, 90, 90], [80, 80, 90, 90], [80, 80, 90, 90]]], dtype=torch.float)
    probs = torch.tensor([[0.6, 0.3, 0.05, 0.05], [0.1, 0.2, 0.5, 0.2], [0.02, 0.03, 0.01, 0.94]])
    return boxes, probs


def test_image_prediction_gives_both_sets_with_their_proposals_probabilities():
    boxes, probs = _three_proposals()
    pred = image_prediction(boxes, probs, (100, 100), score_thresh=0.05, nms_thresh=0.5, topk=100)
    every, top1 = pred.instances, pred.instances_top1
    # all classes: every (proposal, class) above 0.05, by decreasing score
    assert every.proposal_index.tolist() == [0, 1, 0, 1, 1] and every.classes.tolist() == [0, 2, 1, 1, 0]
    # top-1: only each proposal's arg-max foreground class, with that class's box
    assert top1.proposal_index.tolist() == [0, 1] and top1.classes.tolist() == [0, 2]
    assert top1.boxes.tolist() == [[0, 0, 10, 10], [52, 52, 62, 62]]
    assert torch.equal(top1.classes, top1.class_probs[:, :3].argmax(1))
    for det in (every, top1):
        assert torch.equal(det.class_probs, probs[det.proposal_index])  # the whole row of the proposal
        assert torch.equal(det.scores, det.class_probs[torch.arange(len(det.scores)), det.classes])
        assert torch.equal(det.boxes, boxes[det.proposal_index, det.classes])


def test_image_prediction_box_layouts_agree():
    boxes, probs = _three_proposals()
    args = ((100, 100), 0.05, 0.5, 100)

    def sets(b):
        pred = image_prediction(b, probs, *args)
        return [(d.boxes.tolist(), d.classes.tolist(), d.proposal_index.tolist())
                for d in (pred.instances, pred.instances_top1)]

    assert sets(boxes.reshape(3, 12)) == sets(boxes)  # (R, 4K) as Detectron2 decodes them
    agnostic = boxes[:, :1]
    assert sets(agnostic[:, 0]) == sets(agnostic) == sets(agnostic.expand(3, 3, 4).contiguous())


def test_prediction_dict_and_rescale():
    boxes, probs = _three_proposals()
    pred = image_prediction(boxes, probs, (100, 100), 0.05, 0.5, 100).rescale(2.0, 0.5)
    assert pred.instances_top1.boxes.tolist() == [[0, 0, 20, 5], [104, 26, 124, 31]]
    pred.input_scale = {"mode": "standard"}
    out = to_prediction(pred, image_id=7)
    assert list(out) == ["instances", "instances_top1", "image_id", "input_scale"] and out["image_id"] == 7
    for key, n in (("instances", 5), ("instances_top1", 2)):
        d = out[key]
        assert list(d) == ["boxes", "scores", "classes", "class_probs"]
        assert [d[k].dtype for k in d] == [np.float32, np.float32, np.int64, np.float32]
        assert d["boxes"].shape == (n, 4) and d["class_probs"].shape == (n, 4)
    empty = image_prediction(torch.zeros(0, 12), torch.zeros(0, 4), (100, 100), 0.05, 0.5, 100)
    d = to_prediction(empty)["instances_top1"]
    assert d["boxes"].shape == (0, 4) and d["scores"].shape == (0,) and d["class_probs"].shape == (0, 4)
