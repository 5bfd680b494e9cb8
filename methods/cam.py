"""CAM (Zhou et al., CVPR 2016) as IRN trains and evaluates it: the baseline every hook defaults to."""
from wsssbench.methods_api import METHODS, CamConfig, Method

METHODS.add("cam", Method(
    name="cam",
    config=CamConfig,
    summary="Class activation maps of a GAP multi-label classifier (Zhou et al. 2016; IRN's recipe)",
))
