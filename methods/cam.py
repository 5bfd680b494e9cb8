"""CAM (Zhou et al., CVPR 2016) as IRN trains and evaluates it: the baseline every hook defaults to."""
from wsssbench.methods_api import METHODS, CamConfig, Method, Recipe

#: DeepLab-v2 as kazuto1011/deeplab-pytorch main.py trains it with configs/voc12.yaml (CONTA's and C2AM's
#: segmentation stage); --set seg_weights=FILE for its init (ImageNet or COCO); docs/recipes.md.
DEEPLAB = (
    ("seg_backbone", "resnet101"),          # MODEL.NAME DeepLabV2_ResNet101_MSC
    ("seg_size", 321),                      # IMAGE.SIZE.TRAIN 321
    ("seg_batch_size", 5),                  # SOLVER.BATCH_SIZE.TRAIN 5
    ("seg_iter_size", 2),                   # SOLVER.ITER_SIZE 2
    ("seg_iterations", 20000),              # SOLVER.ITER_MAX 20000
    ("seg_lr", 2.5e-4),                     # SOLVER.LR (ASPP weights 10x, biases 20x)
    ("seg_weight_decay", 5e-4),             # SOLVER.WEIGHT_DECAY (none on the ASPP biases)
    ("seg_optimizer", "deeplab"),           # main.py get_params: 1x / 10x / 20x groups
    ("seg_lr_every", 10),                   # SOLVER.LR_DECAY 10: PolynomialLR step_size
    ("seg_scales", (0.5, 0.75, 1.0, 1.25, 1.5)),  # DATASET.SCALES
    ("seg_fixed_bn", True),                 # main.py model.module.base.freeze_bn()
    ("seg_loss", "deeplab"),                # nn.CrossEntropyLoss(ignore_index=255), resize_labels (PIL)
)

#: IRN's classifier and CAM inference as its code runs them (jiwoon-ahn/irn run_sample.py defaults,
#: net/resnet50_cam.py, step/train_cam.py, step/make_cam.py); docs/recipes.md shows the side-by-side check.
PAPER = Recipe("paper", "IRN's ResNet-50 CAM classifier and CAM inference, as jiwoon-ahn/irn's code runs them; "
                "DeepLab-v2 as kazuto1011/deeplab-pytorch's", (
    ("backbone", "resnet50_irn"),           # net/resnet50.py strides (2, 2, 2, 1), layer4 undilated
    ("cls_output_stride", 16),
    ("cls_size", 512),                      # run_sample.py cam_crop_size 512
    ("cls_rescale", (0.625, 1.25)),         # train_cam.py resize_long=(320, 640) = 512 x (0.625, 1.25)
    ("cls_augment", "irn"),
    ("cls_epochs", 5),                      # cam_num_epoches 5
    ("cls_batch_size", 16),                 # cam_batch_size 16
    ("cls_lr", 0.1),                        # cam_learning_rate 0.1 (head 10x)
    ("cls_weight_decay", 1e-4),             # cam_weight_decay 1e-4
    ("cls_optimizer", "irn"),               # torchutils.PolyOptimizer's momentum slot
    ("cls_frozen_blocks", 3),               # resnet50_cam.Net.forward: stage2(x).detach()
    ("cls_fixed_bn", True),                 # resnet50.FixedBatchNorm
    ("cam_scales", (1.0, 0.5, 1.5, 2.0)),   # cam_scales
    ("cam_flip", True),
    ("cam_arithmetic", "irn"),              # make_cam.py: PIL bicubic input, strided_up_size maps
    # IRN's boundary net and walk (used by expansion=rw, i.e. irnet): step/train_irn.py, make_sem_seg_labels.py
    ("rw_pairs", "irn"),                    # misc/indexing.py PathIndex: interior sources only
    ("rw_augment", "irn"),                  # VOC12AffinityDataset: rescale (0.5, 1.5), flip, crop 512, labels 255
    ("rw_optimizer", "irn"),                # torchutils.PolyOptimizer: momentum slot = weight decay 1e-4
    ("rw_infer", "irn"),                    # EdgeDisplacement: pad to 512, flip average; walk x4 up and cropped
    ("rw_batch_size", 32),                  # irn_batch_size 32
    ("rw_train_images", None),              # train_irn.py: every train_aug image
    *DEEPLAB,
))

METHODS.add("cam", Method(
    name="cam",
    config=CamConfig,
    summary="Class activation maps of a GAP multi-label classifier (Zhou et al. 2016; IRN's recipe)",
    recipes=(PAPER,),
))
