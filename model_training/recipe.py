"""A recipe's regularisation settings, as recorded in metadata.json and the reports.
Nothing here imports TensorFlow (``python -m model_training recipe`` reads them quickly)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Augmentation:
    """A recipe's regularisation: its training augmentation, as ``make_dataset`` applies
    it, the optimiser's ``weight_decay`` and the loss's ``robust_loss`` (``compile_model``:
    the q of the generalized cross-entropy; 0 is cross-entropy). ``stain`` scales
    the stain/illumination jitter of ``augment`` and ``gamma`` its camera gamma; ``scale``
    is ``scale_shift``'s amplitude, ``noise`` ``sensor_noise``'s strongest sigma,
    ``cutout`` ``cutout``'s largest side and ``mixup`` the Beta parameter of ``mixup``; 0
    turns each off."""

    scale: float = 0.0
    stain: float = 1.0
    noise: float = 0.0
    mixup: float = 0.0
    gamma: float = 0.0
    cutout: float = 0.0
    weight_decay: float = 0.0
    robust_loss: float = 0.0

    def metadata(self, every: bool = False) -> dict[str, float]:
        """The keys metadata.json and the reports have always used; the options that are
        off are left out unless ``every``."""
        optional = {
            "noise_jitter": self.noise,
            "mixup": self.mixup,
            "gamma_jitter": self.gamma,
            "cutout": self.cutout,
            "weight_decay": self.weight_decay,
            "robust_loss": self.robust_loss,
        }
        return {
            "scale_jitter": self.scale,
            "stain_jitter": self.stain,
            **{k: v for k, v in optional.items() if every or v},
        }
