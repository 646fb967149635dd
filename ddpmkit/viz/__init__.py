"""Pictures: grids of images, curves of sequences, 3-D views of point clouds, scatter plots of
points; :func:`save_sample_grid` draws a batch of samples as its data kind asks; the loss curve
and the quality plot of an evaluation. Nothing else in ddpmkit draws these."""
from .clouds import CLOUD_VIEWS, clouds_image
from .curves import curves_image
from .grids import image_grid, scatter_image
from .plots import plot_loss, plot_quality
from .samples import save_sample_grid

__all__ = ["save_sample_grid", "image_grid", "scatter_image", "curves_image", "clouds_image", "CLOUD_VIEWS",
           "plot_loss", "plot_quality"]
