"""Framework-free DeepACC head: every idea of the paper, once (torch + torchvision.ops only)."""
from .box_head import DecoupledBoxHead  # noqa: F401
from .classifier import (  # noqa: F401
    ClassifierOutput,
    DeepACCClassifier,
    MarginBranch,
    image_index,
    select_local_centres,
    siamese_logits,
)
from .head import DeepACCHead  # noqa: F401
from .inference import image_prediction, select_detections  # noqa: F401
from .losses import (  # noqa: F401
    aam_loss,
    additive_angular_margin,
    box_regression_loss,
    gia_loss,
    partial_label_ce,
    regression_classes,
)
from .prediction import Detections, ImagePrediction, to_prediction  # noqa: F401
