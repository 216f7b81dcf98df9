"""ChimeraSeg's detectron2 config keys: every knob of the method, one comment per key.

Call :func:`add_chimeraseg_config` on a fresh ``get_cfg()`` before merging a YAML. Unknown keys in a
YAML then fail in ``merge_from_file`` with detectron2's ``KeyError`` naming the key, and
:func:`validate_chimeraseg_config` rejects out-of-range choices naming the key and the value.
"""

from __future__ import annotations

from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg

from chimeraseg.clip.cli import DEFAULT_CLIP_NAME
from chimeraseg.d2.cluster_config import add_cluster_config
from chimeraseg.d2.config_checks import explain_removed_key, validate_chimeraseg_config
from chimeraseg.modeling.settings import ChimeraSegSettings
from chimeraseg.utils.config_yaml import load_config_yaml
from chimeraseg.utils.metrics_log import DEFAULT_FSYNC_SECONDS

# The defaults of every model key: the settings objects' own (written once, there).
_DEFAULTS = ChimeraSegSettings()


def _add_model_config(cfg: CN) -> None:
    """Adds ``MODEL.CHIMERASEG.*`` (student, CSH, pseudo masks, losses)."""
    cfg.MODEL.CHIMERASEG = CN()
    m = cfg.MODEL.CHIMERASEG
    # "inductive": unseen class names are unknown during training (latent regions only);
    # "transductive": unseen names label confident ignore pixels (docs/METHOD.md, 'Pseudo masks').
    m.SETTING = _DEFAULTS.setting
    # Images of a batch are padded to a multiple of this (ImageList); 32 = the coarsest stride.
    m.SIZE_DIVISIBILITY = 32
    # Temperature tau of the cosine logits cos(Fc, A) / tau (docs/METHOD.md, 'Logits and
    # segmentation loss').
    m.LOGIT_TAU = _DEFAULTS.logit_tau
    # Build the frozen CLIP teacher (needed for training and the demo's similarity map; the
    # evaluation-only path sets it False to save memory).
    m.BUILD_TEACHER = _DEFAULTS.teacher
    # Teacher dense features for the pseudo masks: "value_ffn" (last block's value path with its
    # residual and FFN) or "value" (value path alone, as in MaskCLIP); see clip/teacher.py.
    m.TEACHER_DENSE_PATH = _DEFAULTS.teacher_dense_path
    # Allow --eval-only / tools/demo.py without trained weights in MODEL.WEIGHTS (an untrained
    # student; smoke tests only). False: a missing or foreign MODEL.WEIGHTS is an error.
    m.ALLOW_RANDOM_WEIGHTS = False

    m.BACKBONE = CN()
    # Older configs only (MODEL.BACKBONE.NAME names the student): "" = follow the name; a MiT
    # variant "b0" ... "b5" or "vit_b16" must agree with it (chimeraseg/d2/backbone.py).
    m.BACKBONE.VARIANT = ""
    # Stochastic depth rate of the backbone's blocks.
    m.BACKBONE.DROP_PATH_RATE = _DEFAULTS.student.drop_path_rate
    # Feature maps handed to the decoder (strides 4, 8, 16, 32).
    m.BACKBONE.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    # ImageNet init of the backbone, loaded strictly: a file (mit_b0.pth), a hub-layout folder or a
    # Hugging Face hub id (nvidia/mit-b0, timm/vit_base_patch16_224.augreg2_in21k_ft_in1k; cached
    # on first use); "" = random init. Skipped when MODEL.WEIGHTS or --resume supplies weights.
    m.BACKBONE.PRETRAINED = _DEFAULTS.student.weights

    m.DECODER = CN()
    # Older configs only: the SegFormer decoder width E follows from MODEL.BACKBONE.NAME (256 for
    # MiT-B0/B1, 768 for B2-B5 and ViT-B); 0 = that width, any other value must equal it.
    m.DECODER.EMBED_DIM = 0
    # Dropout before the decoder output.
    m.DECODER.DROPOUT = _DEFAULTS.student.decoder_dropout

    m.CSH = CN()
    # Layers of the trainable E -> Dv MLP (1 = Linear; 2 = Linear-GELU-Linear).
    m.CSH.MLP_LAYERS = _DEFAULTS.head.mlp_layers
    # Number of frozen last CLIP visual blocks in the VEncoder (0 = no VEncoder), Table VIII.
    m.CSH.VENCODER_BLOCKS = _DEFAULTS.head.vencoder_blocks
    # Keep the value path (ln_1, v_proj, out_proj) of each VEncoder block, Table VI.
    m.CSH.USE_VALUE = _DEFAULTS.head.use_value
    # Keep the FFN (ln_2, mlp) of each VEncoder block, Table VI.
    m.CSH.USE_FFN = _DEFAULTS.head.use_ffn
    # Train the value path instead of freezing it, Table VII.
    m.CSH.TRAINABLE_VALUE = _DEFAULTS.head.trainable_value
    # Train the FFN instead of freezing it, Table VII.
    m.CSH.TRAINABLE_FFN = _DEFAULTS.head.trainable_ffn
    # Norm after the VEncoder: "BN" (SyncBN under DDP), "GN", "LN_clip" (frozen ln_post),
    # "LN" (learnable), "none"; Table IX.
    m.CSH.NORM = _DEFAULTS.head.norm
    # Fres = Fp + Norm(Fv) when True, Norm(Fv) otherwise; Table IV.
    m.CSH.RESIDUAL = _DEFAULTS.head.residual
    # Projection Dv -> D: "frozen" CLIP proj, "learnable" from CLIP init, "he" learnable; Table V.
    m.CSH.PROJ = _DEFAULTS.head.proj

    m.PSEUDO_MASKS = CN()
    # Group ignore pixels into latent regions (off: ignore pixels stay ignored in Lseg).
    m.PSEUDO_MASKS.ENABLED = True
    # K-Means seed window sizes s (seeds average s x s windows, stride s/2) on the teacher grid.
    # The paper gives no scales; of the candidate sets drawn from 2, 4, 8, (4, 8) covered the most
    # hidden pixels at equal purity when measured with tools/pseudo_mask_quality.py
    # (docs/PSEUDO_MASKS.md).
    m.PSEUDO_MASKS.WINDOW_SCALES = list(_DEFAULTS.pseudo_masks.scales)
    # Lloyd iterations of each K-Means run.
    m.PSEUDO_MASKS.KMEANS_ITERS = _DEFAULTS.pseudo_masks.kmeans_iters
    # Clusters of all scales merge when their mean embeddings' cosine similarity exceeds this.
    m.PSEUDO_MASKS.MERGE_THRESHOLD = _DEFAULTS.pseudo_masks.merge_threshold
    # Latent regions smaller than this many teacher-grid cells are dropped (stay ignored).
    m.PSEUDO_MASKS.MIN_AREA = _DEFAULTS.pseudo_masks.min_area
    # At most this many latent regions per image, largest first (-1 = no cap besides 255).
    m.PSEUDO_MASKS.MAX_REGIONS = -1
    # A teacher cell is in the ignore region when at least this fraction of its pixels is 255.
    m.PSEUDO_MASKS.REGION_IGNORE_FRACTION = _DEFAULTS.pseudo_masks.region_ignore_fraction
    # A K-Means seed window is used when more than this fraction of its cells is in the region.
    m.PSEUDO_MASKS.SEED_REGION_FRACTION = _DEFAULTS.pseudo_masks.seed_region_fraction
    # Transductive only: minimum teacher softmax confidence of an unseen class to label a cell.
    m.PSEUDO_MASKS.UNSEEN_THRESHOLD = _DEFAULTS.pseudo_masks.unseen_threshold
    # Transductive only: temperature of that softmax over teacher-to-text cosines.
    m.PSEUDO_MASKS.UNSEEN_TEMPERATURE = _DEFAULTS.pseudo_masks.unseen_temperature

    m.SGD = CN()
    # Weight of the Selective Global Distillation loss (0 disables it), Table III.
    m.SGD.WEIGHT = _DEFAULTS.losses.weights["loss_sgd"]
    # K0 of the top-K schedule, Table XI.
    m.SGD.K_INIT = _DEFAULTS.losses.sgd.k_init
    # Change of K per iteration.
    m.SGD.K_STEP = _DEFAULTS.losses.sgd.k_step
    # K schedule "decrease" (K0 - step*t), "none" (constant) or "increase"; Table X.
    m.SGD.MODE = _DEFAULTS.losses.sgd.mode
    # Temperature of the InfoNCE loss and of the Gumbel softmax (its top-K does not depend on it).
    m.SGD.TAU = _DEFAULTS.losses.sgd.tau
    # Gather teacher CLS embeddings across processes for the negatives of SGD and SAM.
    m.SGD.GATHER = _DEFAULTS.losses.gather

    m.SAM = CN()
    # lambda_sam, weight of the Semantic Alignment loss (0 disables it), Table XII.
    m.SAM.WEIGHT = _DEFAULTS.losses.weights["loss_sam"]
    # tau_f of the prototype-to-CLS softmax.
    m.SAM.TAU_F = _DEFAULTS.losses.sam.tau_f
    # tau_c of the text-to-CLS softmax; None = the CLIP's own learnt temperature
    # 1 / exp(logit_scale) (0.01 for OpenAI's CLIP, the paper's value); a number overrides it.
    m.SAM.TAU_C = _DEFAULTS.losses.sam.tau_c

    m.SEG_LOSS = CN()
    # Weight of the segmentation loss Lseg in the total loss (0 disables it).
    m.SEG_LOSS.WEIGHT = _DEFAULTS.losses.weights["loss_seg"]
    # Weight of the cross-entropy term of Lseg.
    m.SEG_LOSS.CE_WEIGHT = _DEFAULTS.losses.seg.ce_weight
    # Weight of the softmax focal term of Lseg.
    m.SEG_LOSS.FOCAL_WEIGHT = _DEFAULTS.losses.seg.focal_weight
    # Focusing parameter gamma of the focal term.
    m.SEG_LOSS.FOCAL_GAMMA = _DEFAULTS.losses.seg.focal_gamma
    # Weights of losses registered outside the package (chimeraseg.modeling.register_loss), as
    # [name, weight] pairs, e.g. [["loss_toy", 0.5]]; the module registering them must be
    # imported before the model is built (docs/EXTENDING.md). Empty = the paper's three losses.
    m.EXTRA_LOSS_WEIGHTS = []


def _add_clip_config(cfg: CN) -> None:
    """Adds ``MODEL.CLIP.*`` (the frozen CLIP used for text, teacher and CSH weights)."""
    cfg.MODEL.CLIP = CN()
    # open_clip model name, or a path to an open_clip model-config JSON (its stem becomes the
    # name; used by the tests for a tiny CLIP). OpenAI ViT-B/16 weights need "-quickgelu".
    cfg.MODEL.CLIP.NAME = DEFAULT_CLIP_NAME
    # open_clip pretrained tag (e.g. "openai", downloaded once) or a local checkpoint path.
    cfg.MODEL.CLIP.PRETRAINED = "openai"
    # Allow random CLIP weights when PRETRAINED is "" (tests / smoke runs only; never silent).
    cfg.MODEL.CLIP.ALLOW_RANDOM_INIT = False
    # Seed of random CLIP weights (random weights are reproducible, so checkpoints verify).
    cfg.MODEL.CLIP.RANDOM_INIT_SEED = 0
    # Prompt ensemble: "imagenet80+scene", "zegclip15", "single", or a list of "{}" templates.
    cfg.MODEL.CLIP.TEXT_TEMPLATES = "imagenet80+scene"
    # Directory of the text-embedding cache: "" = no on-disk cache; "user-cache" = the user
    # cache's text_embeddings/ ($CHIMERASEG_CACHE, else ~/.cache/chimeraseg; never the working
    # directory: chimeraseg.utils.user_cache); or a folder.
    cfg.MODEL.CLIP.TEXT_CACHE_DIR = ""


def _add_test_config(cfg: CN) -> None:
    """Adds the inference keys under ``TEST.*``."""
    # "whole": one forward pass per image; "slide": overlapping crops, logits averaged.
    cfg.TEST.MODE = _DEFAULTS.inference.mode
    # Sliding-window crop (h, w) in pixels.
    cfg.TEST.SLIDE_CROP_SIZE = list(_DEFAULTS.inference.slide_crop)
    # Sliding-window stride (h, w) in pixels.
    cfg.TEST.SLIDE_STRIDE = list(_DEFAULTS.inference.slide_stride)
    # Bias gamma added to unseen-class logits (inductive calibration; 0.5 on COCO-Stuff).
    cfg.TEST.GAMMA = 0.0
    # Extra gamma values evaluated in the same pass (Fig. 10); [] = only TEST.GAMMA.
    cfg.TEST.GAMMA_SWEEP = []
    # CSH positions per chunk at inference (exact: same logits, cache-sized intermediates and
    # far less memory at large batches); 0 = all positions in one pass. Never used in training.
    cfg.TEST.CSH_CHUNK_TOKENS = _DEFAULTS.inference.chunk_tokens
    # INEXACT speed option, off by default (1): k > 1 average-pools the decoder output k x k
    # before the CSH (2 = CSH at stride 8, ~4x fewer positions), logits upsampled once.
    cfg.TEST.CSH_DOWNSAMPLE = _DEFAULTS.inference.head_downsample
    # Lower-precision inference (evaluation, --eval-only, tools/demo.py), off by default: the
    # student and the CSH run under autocast, the cosine logits stay float32.
    cfg.TEST.AMP = CN()
    # True = autocast at inference with TEST.AMP.PRECISION.
    cfg.TEST.AMP.ENABLED = False
    # "bfloat16" (CPU and recent GPUs) or "float16" (CUDA only, for GPUs without bfloat16).
    cfg.TEST.AMP.PRECISION = "bfloat16"
    # True = the student and decoder run through torch.compile at inference (compiled on the
    # first image; the CSH and the cosine stay eager). Measured in tools/benchmark.py, 'deploy'.
    cfg.TEST.COMPILE = _DEFAULTS.inference.compile


def _add_solver_config(cfg: CN) -> None:
    """Adds optimizer and schedule keys under ``SOLVER.*``."""
    # "ADAMW" (paper) or "SGD" (momentum SOLVER.MOMENTUM).
    cfg.SOLVER.OPTIMIZER = "ADAMW"
    # AdamW (beta1, beta2).
    cfg.SOLVER.BETAS = [0.9, 0.999]
    # LR multiplier of the student backbone.
    cfg.SOLVER.BACKBONE_MULTIPLIER = 1.0
    # LR multiplier of the decoder and the CSH (x10 in the paper; docs/METHOD.md 'Paper settings').
    cfg.SOLVER.HEAD_MULTIPLIER = 10.0
    # Weight decay of positional embeddings / tokens (no decay, as for norms).
    cfg.SOLVER.WEIGHT_DECAY_EMBED = 0.0
    # Power of the poly schedule (1 - t/T)^power after warm-up ("WarmupPolyLR").
    cfg.SOLVER.POLY_LR_POWER = 1.0
    # Deterministic kernels where PyTorch has them (slower on GPUs; warns naming the others);
    # SEED alone fixes the random draws only (chimeraseg/d2/determinism.py).
    cfg.DETERMINISTIC = False
    # Autocast dtype of SOLVER.AMP.ENABLED (detectron2's key): "float16" (CUDA, loss scaling)
    # or "bfloat16" (CUDA or CPU, no loss scaling); see chimeraseg/d2/amp.py.
    cfg.SOLVER.AMP.PRECISION = "float16"


def _add_gpu_config(cfg: CN) -> None:
    """Adds the GPU switches (chimeraseg/d2/gpu_switches.py; docs/GPU.md, 'GPU switches').

    The CUDA-only switches are skipped on other devices, so none of them changes a CPU run.
    """
    # detectron2's key. "highest" = float32 matmuls and cuDNN convolutions without TF32: the
    # numbers the CPU runs reproduce (the teacher's features feed the pseudo masks' thresholds);
    # "high" = TF32 (faster on Ampere and later GPUs, 10-bit mantissa inputs); "medium" = bf16
    # matmuls; "" = PyTorch's defaults (float32 matmuls, TF32 cuDNN convolutions).
    cfg.FLOAT32_PRECISION = "highest"
    # detectron2's key: cuDNN times its convolution algorithms once per input shape and keeps the
    # fastest (training crops all have INPUT.CROP.SIZE). Off under DETERMINISTIC and --eval-only.
    cfg.CUDNN_BENCHMARK = True
    # Fused AdamW / SGD kernel (one launch for all parameters) on CUDA; the plain kernel on other
    # devices and under float16 AMP with SOLVER.CLIP_GRADIENTS (logged).
    cfg.SOLVER.FUSED = True
    # Training batches in page-locked memory, so the non-blocking uint8 image and uint8 / int16
    # label copies to the GPU overlap compute (CUDA only).
    cfg.DATALOADER.PIN_MEMORY = True
    # Student backbone, decoder and their input in channels-last memory format (meant for cuDNN's
    # tensor-core convolutions under AMP; values unchanged up to float rounding).
    cfg.MODEL.CHANNELS_LAST = False
    # torch.compile of the training step's fixed-shape modules (student, decoder, CSH, teacher),
    # in place: checkpoints keep the eager state-dict keys. Pseudo masks and losses stay eager.
    cfg.SOLVER.COMPILE = False
    # metrics.json: rows are written and flushed every iteration; the fsync to disk runs on a
    # background thread at most once per this many seconds (0 = every row, on the training
    # thread; slow on NFS / Lustre). See chimeraseg/utils/metrics_log.py.
    cfg.METRICS_FSYNC_SECONDS = DEFAULT_FSYNC_SECONDS


def add_chimeraseg_config(cfg: CN) -> None:
    """Adds every ChimeraSeg key (with its default) to a detectron2 config, in place.

    Also replaces the detectron2 defaults that ChimeraSeg reads by the paper's settings (§IV-B),
    so that a config without a YAML is the paper's COCO-Stuff MiT setting, not detectron2's.

    Args:
        cfg: a config from ``detectron2.config.get_cfg()``.
    """
    _add_model_config(cfg)
    _add_clip_config(cfg)
    _add_test_config(cfg)
    _add_solver_config(cfg)
    _add_data_defaults(cfg)
    add_cluster_config(cfg)  # CLUSTER.*: preemption, fail fast (chimeraseg/d2/cluster_config.py)
    _add_gpu_config(cfg)
    _set_paper_defaults(cfg)


def _set_paper_defaults(cfg: CN) -> None:
    """Sets detectron2's own keys to the paper's values (§IV-B); the YAMLs do not repeat them."""
    # The meta-architecture and the student backbone: one registered name ("mit_b0" ... "mit_b5",
    # "vit_b16"); its MiT variant and decoder width follow from it.
    cfg.MODEL.META_ARCHITECTURE = "ChimeraSeg"
    cfg.MODEL.BACKBONE.NAME = _DEFAULTS.student.backbone
    # The model takes RGB 0..255 and normalises with ImageNet RGB statistics.
    cfg.INPUT.FORMAT = "RGB"
    cfg.MODEL.PIXEL_MEAN = list(_DEFAULTS.pixel_mean)
    cfg.MODEL.PIXEL_STD = list(_DEFAULTS.pixel_std)
    # Reference scale of the random rescale (short side, long-side cap), then 512x512 crops.
    cfg.INPUT.MIN_SIZE_TRAIN = (512,)
    cfg.INPUT.MAX_SIZE_TRAIN = 2048
    cfg.INPUT.MIN_SIZE_TEST = 512
    cfg.INPUT.MAX_SIZE_TEST = 2048
    cfg.INPUT.CROP.ENABLED = True
    cfg.INPUT.CROP.TYPE = "absolute"
    cfg.INPUT.CROP.SIZE = [512, 512]
    cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = 0.75
    cfg.INPUT.COLOR_AUG_SSD = True
    # Batch 16, AdamW lr 6e-5 (decoder and CSH x10), weight decay 0.01 (none on norms),
    # poly schedule (power 1.0) after 1,500 linear warm-up iterations, 80k iterations.
    cfg.SOLVER.IMS_PER_BATCH = 16
    cfg.SOLVER.BASE_LR = 6e-5
    cfg.SOLVER.WEIGHT_DECAY = 0.01
    cfg.SOLVER.WEIGHT_DECAY_NORM = 0.0
    cfg.SOLVER.LR_SCHEDULER_NAME = "WarmupPolyLR"
    cfg.SOLVER.WARMUP_ITERS = 1500
    cfg.SOLVER.WARMUP_FACTOR = 1e-6
    cfg.SOLVER.WARMUP_METHOD = "linear"
    cfg.SOLVER.MAX_ITER = 80000


def _add_data_defaults(cfg: CN) -> None:
    """Adds the data keys the zero-shot mapper reads beyond detectron2's ``INPUT.*``.

    Training resize: the short side ``INPUT.MIN_SIZE_TRAIN[0]`` (one value) and the long-side cap
    ``INPUT.MAX_SIZE_TRAIN`` form the reference scale, multiplied by a random ratio.
    """
    # Range (lo, hi) of the random rescale ratio of the reference scale (SegFormer: 0.5-2.0).
    cfg.INPUT.RESIZE_RATIO_RANGE = [0.5, 2.0]
    # Single-category area cap of random crops (1.0 disables it; SegFormer: 0.75).
    cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = 1.0
    # Photometric distortion (brightness, contrast, saturation, hue) in training.
    cfg.INPUT.COLOR_AUG_SSD = False
    # detectron2's key, off: training crops share INPUT.CROP.SIZE, and the resumable training
    # stream (chimeraseg/d2/data/resumable.py) batches its samples in order (True is refused).
    cfg.DATALOADER.ASPECT_RATIO_GROUPING = False
    # Leave out images without a label file (and labels without an image) with a logged count,
    # instead of stopping with an error naming them.
    cfg.DATASETS.SKIP_IMAGES_WITHOUT_LABEL = False
    # Your own dataset (chimeraseg/d2/data/register_custom.py; datasets/README.md, 'Use your own
    # dataset'): registered by get_chimeraseg_cfg as <NAME>_<split> for each of SPLITS.
    cfg.DATASETS.CUSTOM = CN()
    # Name of the split and prefix of the datasets ("" = no custom dataset).
    cfg.DATASETS.CUSTOM.NAME = ""
    # Folder holding images/<split>/<id><IMAGE_EXT> and labels/<split>/<id>.png.
    cfg.DATASETS.CUSTOM.ROOT = ""
    # Sub-folders to register; "train" is registered for training, the others for evaluation.
    cfg.DATASETS.CUSTOM.SPLITS = ["train", "val"]
    # Image file extension.
    cfg.DATASETS.CUSTOM.IMAGE_EXT = ".jpg"
    # Class names in label order (value i = i-th name), or a file with one name per line
    # (relative paths are under ROOT). Set one of the two.
    cfg.DATASETS.CUSTOM.CLASSES = []
    cfg.DATASETS.CUSTOM.CLASSES_FILE = ""
    # Unseen class names (never labelled in training), as a list or a file; both empty = none.
    cfg.DATASETS.CUSTOM.UNSEEN = []
    cfg.DATASETS.CUSTOM.UNSEEN_FILE = ""
    # Seen class names, as a list or a file; both empty = every class that is not unseen.
    cfg.DATASETS.CUSTOM.SEEN = []
    cfg.DATASETS.CUSTOM.SEEN_FILE = ""


def get_chimeraseg_cfg(config_file: str | None = None, opts: list[str] | None = None) -> CN:
    """Builds a default config with ChimeraSeg keys, merges a YAML and ``KEY VALUE`` overrides.

    Args:
        config_file: path of a YAML config (``_BASE_`` chains are followed), or None.
        opts: flat list ``["KEY", "VALUE", ...]`` of command-line overrides.

    Returns:
        The validated (not frozen) config.

    Raises:
        ConfigFileError: naming the file, for a YAML holding a tag that could run code (the file
            is never loaded unsafely), a URL ``_BASE_``, or an unreadable file.
        KeyError: when the YAML (naming the file) or ``opts`` hold an unknown key (naming it).
        ValueError: naming key and value, for an enumerated key outside its choices or a value
            out of range (see :func:`validate_chimeraseg_config`).
    """
    cfg = get_cfg()
    add_chimeraseg_config(cfg)
    if config_file:
        load_config_yaml(config_file)  # refuses code-running tags and URL _BASE_s, naming the file
        try:
            cfg.merge_from_file(config_file, allow_unsafe=False)
        except KeyError as e:  # detectron2: "Non-existent config key: A.B.C"
            message = explain_removed_key(str(e.args[0]))
            raise KeyError(f"{config_file} (or a _BASE_ it extends): {message}") from e
    if opts:
        try:
            cfg.merge_from_list(list(opts))
        except AssertionError as e:  # yacs: "Non-existent key: A.B.C" for command-line opts
            raise KeyError(f"command-line override: {explain_removed_key(str(e))}") from e
    validate_chimeraseg_config(cfg)
    from chimeraseg.d2.data.register_custom import register_custom_from_config

    register_custom_from_config(cfg)  # DATASETS.CUSTOM: before anything reads DATASETS.TRAIN
    return cfg
