from cdseg.models.siamese_unet import SiameseUNet

__all__ = ["SiameseUNet"]
