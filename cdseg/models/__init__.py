from cdseg.models.fc_ef import FCEF
from cdseg.models.fc_siam_conc import FCSiamConc
from cdseg.models.fc_siam_diff import FCSiamDiff
from cdseg.models.network import build_network
from cdseg.models.siamese_resnet import SiameseResNet
from cdseg.models.siamese_unet import SiameseUNet
from cdseg.models.snunet import SNUNet
from cdseg.models.tiny import TinyCD

__all__ = [
    "FCEF",
    "FCSiamConc",
    "FCSiamDiff",
    "SNUNet",
    "SiameseResNet",
    "SiameseUNet",
    "TinyCD",
    "build_network",
]
