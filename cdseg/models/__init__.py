from cdseg.models.fc_ef import FCEF
from cdseg.models.fc_siam_conc import FCSiamConc
from cdseg.models.fc_siam_diff import FCSiamDiff
from cdseg.models.siamese_unet import SiameseUNet
from cdseg.models.snunet import SNUNet

__all__ = ["FCEF", "FCSiamConc", "FCSiamDiff", "SNUNet", "SiameseUNet"]
