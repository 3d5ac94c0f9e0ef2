"""Training on class-agnostic ground truth (label K+1 = AGNOSTIC, ours): the losses' formulas on small
tensors, that such rows never teach a class, and one training step of each engine's head on a spread
whose chromosomes have no class."""
import math

import pytest
import torch
import torch.nn.functional as F

from deepacc.config import get_cfg, head_options, load_config
from deepacc.karyotype import AGNOSTIC, BACKGROUND, NUM_CLASSES
from deepacc.modeling import DeepACCClassifier, aam_loss, partial_label_ce, regression_classes
from deepacc.modeling.losses import additive_angular_margin, box_regression_loss
from deepacc.tv.model import build_model
from tv_tiny import QUICK_CONFIG, TINY_OPTS

K = NUM_CLASSES


def test_the_contract_indices():
    assert BACKGROUND == K and AGNOSTIC == K + 1


def test_partial_label_ce_is_plain_cross_entropy_without_agnostic_rows():
    torch.manual_seed(0)
    z = torch.randn(7, K + 1)
    y = torch.tensor([0, 5, 23, 24, 24, 11, 2])
    assert torch.allclose(partial_label_ce(z, y), F.cross_entropy(z, y), rtol=0, atol=1e-6)


def test_partial_label_ce_takes_the_likelihood_of_any_class_for_agnostic_rows():
    torch.manual_seed(1)
    z = torch.randn(4, K + 1)
    y = torch.tensor([3, K, AGNOSTIC, AGNOSTIC])
    p = F.softmax(z, dim=1)
    by_hand = (-math.log(p[0, 3]) - math.log(p[1, K]) - math.log(p[2, :K].sum()) - math.log(p[3, :K].sum())) / 4
    assert float(partial_label_ce(z, y)) == pytest.approx(by_hand, rel=1e-5)
    # weight 0: the agnostic rows add nothing but still count in the mean
    w0 = (-math.log(p[0, 3]) - math.log(p[1, K])) / 4
    assert float(partial_label_ce(z, y, agnostic_weight=0.0)) == pytest.approx(w0, rel=1e-5)
    # a confident "some chromosome" costs ~0 whatever the class; a confident background costs a lot
    fg = torch.full((1, K + 1), -10.0)
    fg[0, 17] = 10.0
    bg = torch.full((1, K + 1), -10.0)
    bg[0, K] = 10.0
    a = torch.tensor([AGNOSTIC])
    assert float(partial_label_ce(fg, a)) < 1e-6 and float(partial_label_ce(bg, a)) > 15


def test_agnostic_rows_never_change_the_distribution_over_classes():
    """Gradient steps on an agnostic row move chromosome-vs-background only: softmax over the K class
    logits stays exactly as it was (the plain marginal would sharpen it towards the favourite)."""
    torch.manual_seed(2)
    z = torch.randn(3, K + 1) * 2
    z[:, K] += 3.0  # mostly background at first
    z.requires_grad_(True)
    before = F.softmax(z.detach()[:, :K], dim=1)
    opt = torch.optim.SGD([z], lr=1.0)
    y = torch.full((3,), AGNOSTIC)
    for _ in range(50):
        opt.zero_grad()
        partial_label_ce(z, y).backward()
        g = z.grad[:, :K]
        assert torch.allclose(g, g[:, :1].expand_as(g), rtol=0, atol=1e-7)  # one gradient for all classes
        opt.step()
    after = F.softmax(z.detach()[:, :K], dim=1)
    assert torch.allclose(before, after, rtol=0, atol=1e-5)
    p = F.softmax(z.detach(), dim=1)
    assert bool((p[:, :K].sum(1) > 0.9).all())  # it did learn "chromosome"


def test_aam_gives_no_margin_to_agnostic_rows():
    torch.manual_seed(3)
    cos = torch.rand(4, K + 1) * 2 - 1
    y = torch.tensor([2, K, AGNOSTIC, 9])
    m = 0.25
    out = additive_angular_margin(cos, y, m)
    assert torch.equal(out[2], cos[2].float())  # untouched
    th = torch.acos(cos[0, 2].clamp(-1, 1))
    assert float(out[0, 2]) == pytest.approx(float(torch.cos(th + m)), abs=1e-6)
    s = 64.0
    expected = partial_label_ce(out * s, y)
    assert torch.allclose(aam_loss(cos, y, s, m), expected, rtol=1e-6)
    # without agnostic rows the AAM loss is the paper's Eq. 1
    y2 = torch.tensor([2, K, 7, 9])
    ref = F.cross_entropy(additive_angular_margin(cos, y2, m) * s, y2)
    assert torch.allclose(aam_loss(cos, y2, s, m), ref, rtol=1e-6)


def test_regression_classes_use_the_most_probable_class_for_agnostic_rows():
    probs = torch.zeros(4, K + 1)
    probs[:, K] = 0.5
    probs[0, 4] = probs[1, 20] = probs[2, 7] = probs[3, 1] = 0.4
    labels = torch.tensor([AGNOSTIC, 3, K, AGNOSTIC])
    assert regression_classes(labels, probs, K).tolist() == [4, 3, K, 1]
    # the box loss then regresses those classes' deltas only
    deltas = torch.zeros(4, 4 * K, requires_grad=True)
    targets = torch.ones(4, 4)
    loss = box_regression_loss(deltas, targets, regression_classes(labels, probs, K), K)
    loss.backward()
    touched = (deltas.grad.view(4, K, 4).abs().sum(-1) > 0).nonzero().tolist()
    assert touched == [[0, 4], [1, 3], [3, 1]]


@pytest.mark.parametrize("kind", ["faster_rcnn", "deepacc"])
def test_classifier_losses_with_agnostic_rows_backpropagate_and_skip_gia(kind):
    cfg = get_cfg()
    if kind == "faster_rcnn":
        cfg.merge_from_list(["MODEL.ROI_HEADS.NAME", "StandardROIHeads"])
    opts = head_options(cfg)
    keep = {k: v for k, v in opts.as_dict().items() if k not in ("num_classes", "fc_dim", "num_fc", "decoupled",
                                                          "cls_agnostic_bbox_reg")}
    torch.manual_seed(4)
    clf = DeepACCClassifier(16, K, **keep).train()
    x = torch.randn(10, 16, requires_grad=True)
    labels = torch.tensor([AGNOSTIC, AGNOSTIC, K, K, AGNOSTIC, 0, 1, K, AGNOSTIC, K])
    out = clf(x, [5, 5])
    losses = clf.losses(out, labels)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    if kind == "deepacc":
        # GIA sums over positives with a known class only: agnostic rows as background give the same
        relabelled = torch.where(labels == AGNOSTIC, torch.full_like(labels, K), labels)
        out2 = clf(x.detach(), [5, 5])
        assert torch.allclose(clf.losses(out2, labels)["loss_gia"], clf.losses(out2, relabelled)["loss_gia"])


def test_a_spread_without_classes_trains_the_torchvision_model():
    """A training step on an image whose chromosomes are all class-agnostic: every loss finite, the box
    loss non-zero (its chromosomes are regressed), and what the agnostic proposals add to the gradient
    of the class scores is one and the same for the 24 classes."""
    cfg = load_config(QUICK_CONFIG, TINY_OPTS + ["MODEL.ROI_HEADS.NAME", "StandardROIHeads",
                                                 "MODEL.DEEPACC.DECOUPLED_HEAD", "False",
                                                 "MODEL.DEEPACC.AAM.ENABLED", "False",
                                                 "MODEL.DEEPACC.SIAMESE.ENABLED", "False",
                                                 "MODEL.DEEPACC.GIA.ENABLED", "False"])
    torch.manual_seed(0)
    model = build_model(cfg).train()
    img = torch.rand(3, 144, 192)
    target = {"boxes": torch.tensor([[10.0, 10.0, 40.0, 60.0], [100.0, 50.0, 125.0, 110.0], [150.0, 20.0, 170.0, 70.0]]),
              "classes": torch.full((3,), AGNOSTIC)}
    clf = model.roi_heads.box_head.classifier

    def bias_grad(weight):
        clf.agnostic_weight = weight
        torch.manual_seed(1)  # the same proposals and samples in both runs
        losses = model([img], [dict(target)])
        model.zero_grad()
        losses["loss_cls"].backward()
        return losses, clf.cls_score.bias.grad.clone()

    losses, with_agnostic = bias_grad(1.0)
    assert set(losses) >= {"loss_cls", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    assert all(torch.isfinite(v) for v in losses.values())
    assert float(losses["loss_box_reg"].detach()) > 0
    _, without = bias_grad(0.0)
    added = with_agnostic - without
    assert torch.allclose(added[:K], added[:1].expand(K), rtol=0, atol=1e-7)
    assert float(added[K]) > 1e-4  # chromosome vs background is learnt: background pushed down


def test_agnostic_loss_weight_is_a_config_key():
    cfg = get_cfg()
    assert cfg.MODEL.DEEPACC.AGNOSTIC_LOSS_WEIGHT == 1.0
    cfg.merge_from_list(["MODEL.DEEPACC.AGNOSTIC_LOSS_WEIGHT", "0.25"])
    assert head_options(cfg).agnostic_weight == 0.25
