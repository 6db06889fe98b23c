"""Every ferjax option, documented. Other configs start from this one and change what differs.

Override any key on the command line: --config.train.num_epochs=50 --config.data.classes=happy,sad
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()

    # ---------------------------------------------------------------- data
    config.data = data = ml_collections.ConfigDict()
    # Source: synthetic (embedded procedural faces) | fer2013 (Kaggle fer2013.csv) |
    # ferplus (fer2013new.csv + fer2013.csv) | folder (train/<class>/*.png ...) | tfds |
    # rafdb (RAF-DB's basic/ folder) | affectnet (training.csv, validation.csv and the images).
    data.name = "synthetic"
    # File or folder of the source (fer2013.csv for fer2013; folder root for folder).
    data.path = ""
    # Comma-separated class names to keep, in the label order you want (e.g. happy,sad,neutral);
    # FER2013 and FER+ spellings are both accepted. Empty = all classes of the source.
    data.classes = ""
    # Cap on training examples (a seeded random sample; 0 = all) for quick CPU runs.
    data.subset = 0
    # Bad rows in the source: raise (stop with one line naming the row) | skip (drop and count).
    data.on_error = "raise"
    # Where parsed files are cached (.npz keyed by content hash); empty = ~/.cache/ferjax.
    data.cache_dir = ""
    # Procedural faces (data.name=synthetic): split sizes, generator seed, training label noise.
    data.synthetic = ml_collections.ConfigDict()
    data.synthetic.num_train = 28709
    data.synthetic.num_val = 3589
    data.synthetic.num_test = 3589
    data.synthetic.seed = 0
    data.synthetic.label_noise = 0.0
    # Input normalisation: dataset (training mean/std) | per_image (each face to zero mean and
    # unit variance, removing lighting differences) | unit ([0, 1]) | symmetric ([-1, 1]).
    data.normalize = "dataset"
    # Per-image histogram equalisation on the host, once, after cleaning.
    data.equalize = False
    # 3x3 median filter (edge padding) on the device, before augmentation and at evaluation.
    data.median_filter = False
    # ferplus: FER+ votes file (fer2013new.csv); empty = fer2013new.csv next to data.path
    # (which is fer2013.csv, for the pixels).
    data.ferplus_path = ""
    # ferplus (and tfds_config=ferplus) label mode: majority (keep rows where one emotion has
    # more than half of the votes; hard labels) | probability (soft targets: the votes
    # normalised over the 8 emotions). Rows whose top vote is unknown or NF are always dropped.
    data.ferplus_mode = "majority"
    # Colour channels of the images the model sees: 1 (grayscale; colour sources are converted
    # with Pillow's luma) | 3 (RGB; grayscale sources are repeated over the three channels).
    data.channels = 1
    # Side of the square images the model sees (48..224): folder, rafdb and affectnet images
    # are decoded at this size, procedural faces rendered at it, FER2013 (48x48) resized to it.
    data.image_size = 48
    # rafdb: Image/aligned/*_aligned.jpg (true, the 100x100 aligned faces) or Image/original/.
    data.rafdb_aligned = True
    # affectnet: 7 (neutral..anger) or 8 (with contempt) classes; the other expression codes
    # (none, uncertain, no-face, and contempt for 7) are dropped and counted.
    data.affectnet_classes = 7
    # Threads that decode image files (folder, rafdb, affectnet); 0 = one per core.
    data.workers = 0
    # folder without a val/ folder: fraction of each training class carved off as validation,
    # with this seed (independent of train.seed, so the split stays put across runs).
    data.val_fraction = 0.1
    data.split_seed = 0
    # tfds: data.path is TFDS's manual folder (fer2013.csv, fer2013new.csv); builder config
    # fer2013 | ferplus; TFDS data folder (empty = ~/tensorflow_datasets).
    data.tfds_config = "fer2013"
    data.tfds_data_dir = ""
    # Cleaning after reading, before class selection; every removed row is counted by reason,
    # split and class in data_report.json. See ferjax/data/cleaning.py.
    data.clean = clean = ml_collections.ConfigDict()
    # Drop blank or near-constant images: pixel std (0..255 scale) below blank_std.
    clean.blank = True
    clean.blank_std = 2.0
    # Drop exact duplicate images within a split (the first copy is kept).
    clean.duplicates = True
    # Cross-split leakage: drop train images that also appear in val or test, and val images
    # that also appear in test (test is never changed).
    clean.cross_split = True
    # Near-duplicates by a 256-bit DCT perceptual hash: drop images within near_hamming bits
    # (0..128) of an earlier image of the same split, and train images that near-match val/test.
    # 20 catches re-encoded, brightness/contrast-shifted or slightly noisier copies and flags
    # only a handful of procedural faces. Off by default: the all-pairs hash comparison costs
    # noticeable CPU time on a FER2013-sized set.
    clean.near_duplicates = False
    clean.near_hamming = 20
    # Label-noise hook: a text file, one entry per line, `[split:]row` to drop that row or
    # `[split:]row,class` to relabel it (row = 1-based source row; # comments). Empty = off.
    clean.label_noise_file = ""

    # Where the training images live: device (on the accelerator, the host sends only index
    # records) | host (host memory; tf.data gathers uint8 batches per step, for data larger than
    # device memory; "stream" is its former name) | disk (rafdb, affectnet: converted once into
    # a store of decoded faces, sharded ArrayRecord files under data.shards_dir, read per step
    # by background threads, for data larger than host memory) | auto (disk when the decoded
    # images would take more than half of the available host memory, else device unless they
    # take more than half of the device memory, else host).
    data.placement = "auto"
    # Where shard stores are kept (data.placement=disk); empty = <data.cache_dir>/shards. A store
    # is reused while the source files and the image settings are unchanged.
    data.shards_dir = ""

    # ---------------------------------------------------------------- model
    config.model = model = ml_collections.ConfigDict()
    # cnn (VGG-style) | resnet18 | resnet34 (all adapted to 48x48) | vgg16 | resnet50 (the
    # ImageNet architectures, for transfer learning; see ferjax/models/imagenet.py).
    model.name = "cnn"
    # Dropout before the classifier.
    model.dropout = 0.5
    # cnn: channels per stage (comma-separated), convs per stage, head width, dropout after
    # each pooling stage.
    model.cnn_widths = "64,128,256,512"
    model.cnn_convs_per_stage = 2
    model.cnn_hidden = 512
    model.conv_dropout = 0.1
    # cnn head: auto (above 48 px the last feature map is average-pooled to the side it has at
    # 48 px, so the head and its initialisation are the same at every input size) | flatten.
    model.cnn_head = "auto"
    # resnet*: width of the first stage (64 = the standard ResNet widths 64/128/256/512).
    model.width = 64
    # resnet18/34 stem: small (3x3 stride 1, no max-pool: 48x48 faces) | imagenet (torchvision's
    # 7x7 stride 2 + 3x3 max-pool, so ImageNet weights load as they are) | auto (imagenet from
    # data.image_size 96 on, small below).
    model.stem = "auto"
    # vgg16 / resnet50: how the grayscale image meets the RGB first conv: sum_rgb (one input
    # channel, the first kernel summed over RGB; cheaper) | replicate (gray copied to 3 channels).
    model.input_adapter = "sum_rgb"
    # vgg16 / resnet50: resize (bilinear) the 48x48 input to input_size x input_size before the
    # backbone, e.g. 96 or 224 (closer to ImageNet scale, slower); 0 = keep 48x48.
    model.input_size = 0
    # resnet50: torch (stride on the 3x3 conv, BN epsilon 1e-5; torchvision/timm weights) |
    # keras (stride on the first 1x1 conv, epsilon 1.001e-5; keras.applications weights) |
    # auto (from model.init_from's source; torch when there is none).
    model.style = "auto"
    # Pretrained weights to start from (a fresh run only; resuming ignores it): a file written by
    # `ferjax convert`, a Keras .h5 / .weights.h5, .safetensors or .pth file (converted
    # on the fly), or a ferjax workdir / Orbax checkpoint. Every tensor except the head must be
    # there with the right shape; the head is kept fresh when missing or of another class count.
    model.init_from = ""
    # Parameter groups to freeze: comma-separated regexes searched in '/'-joined parameter paths
    # such as backbone/stage1_block1/conv1/kernel, e.g. "backbone" or "stem,stage1,stage2" (or
    # "block1,block2" for vgg16). Frozen parameters get no updates and their BatchNorm
    # statistics stay fixed. Empty = train everything.
    model.freeze = ""
    # Convolution / max-pool implementation: auto (xla on GPU/TPU; on CPU fast, or gemm when
    # XLA's CPU convolutions run through YNNPACK, see ferjax/runtime/platform.py) | xla (Flax's
    # nn.Conv
    # and nn.max_pool, XLA's own gradients) | fast (nn.Conv + ferjax.models.ops.max_pool_2x2, whose
    # gradient is several times faster on CPU) | gemm (fast + convolution weight gradients as
    # cache-sized im2col GEMMs). All give the same parameter tree, so checkpoints interchange.
    model.conv_impl = "auto"

    # ---------------------------------------------------------------- optimiser
    config.optim = optim = ml_collections.ConfigDict()
    # sgd (momentum, Nesterov by default) | adamw | adam.
    optim.name = "sgd"
    # Peak learning rate, reached after warm-up.
    optim.learning_rate = 0.05
    optim.momentum = 0.9
    optim.nesterov = True
    optim.b1 = 0.9
    optim.b2 = 0.999
    # Decoupled weight decay (adamw) or L2 added to the gradient (sgd), applied to conv and
    # dense kernels only unless decay_norm_and_bias=True.
    optim.weight_decay = 5e-4
    optim.decay_norm_and_bias = False
    # Learning-rate schedule after warm-up: cosine | step | constant.
    optim.schedule = "cosine"
    optim.warmup_epochs = 1.0
    # step schedule: epochs (comma-separated) at which the rate is multiplied by step_factor.
    optim.step_epochs = ""
    optim.step_factor = 0.1
    # Sharpness-aware minimisation (Foret et al. 2021) around any optimiser: the gradient is
    # taken at params + rho * g / |g| (one extra forward/backward per step); 0 = off.
    optim.sam_rho = 0.0
    # Clip gradients to this global norm (0 = off). With model.freeze, the norm is taken over
    # the trainable and the frozen group separately.
    optim.grad_clip_norm = 0.0
    # Learning-rate multiplier for the model.freeze groups once unfrozen (train.unfreeze_at_epoch).
    optim.backbone_lr_scale = 0.1

    # ---------------------------------------------------------------- training
    config.train = train = ml_collections.ConfigDict()
    # Global batch size (split over all devices of all hosts).
    train.batch_size = 128
    train.num_epochs = 30
    train.seed = 0
    train.label_smoothing = 0.0
    # Activation dtype: float32 | bfloat16 | float16 (parameters stay float32).
    train.dtype = "float32"
    # Static loss scale for the backward pass (0 = auto: 1024 for float16, 1 otherwise). A
    # step whose scaled gradient overflows is skipped by the non-finite guard (train.on_nan).
    train.loss_scale = 0.0
    # Log training metrics every N steps (metrics stay on the device in between).
    train.log_every_steps = 50
    # Console output (process 0 only): 0 quiet (warnings, errors and the final test line) |
    # 1 a progress bar per epoch on a terminal (steps, images/s, loss, ETA), a plain progress
    # line every progress_seconds otherwise (log files, CI), and one summary line per epoch |
    # 2 also per-class precision and ECE per epoch, and progress lines 3x as often.
    train.verbosity = 1
    train.progress_seconds = 30.0
    # Also checkpoint every N steps (0 = only at the end of each epoch).
    train.checkpoint_every_steps = 0
    # Validation metric that selects the best checkpoint: accuracy | balanced_accuracy |
    # macro_f1 | loss (lower is better).
    train.best_metric = "accuracy"
    # Batch size for evaluation. 128 keeps the first layers' activations near the CPU's caches:
    # on 2 cores, 1.9x the throughput of 512 for the demo CNN on 3,589 faces, 1.18x for `cnn`,
    # 0.97x for ResNet-18 on 1,024 faces at 48 px, the same probabilities bit for bit in all
    # three (python -m bench.eval_batch). Raise it on an accelerator.
    train.eval_batch_size = 128
    # Stop this process after N steps (with a checkpoint), as if interrupted; 0 = never.
    # Re-running the same command resumes. Used to test exact resume.
    train.halt_after_steps = 0
    # Peak FLOP/s of one device, for model FLOPs utilisation (MFU) in the logs; 0 = do not
    # report MFU. E.g. 989e12 for an H100 in bf16 (dense), 197e12 for a TPU v5e.
    train.peak_flops_per_device = 0.0
    # JAX's persistent compilation cache: compiled steps are reused by later runs of the same
    # model and shapes (a faster start-up; `python -m bench.startup` measures it). "auto" =
    # ~/.cache/ferjax/jax (or $XDG_CACHE_HOME/ferjax/jax); a path; "" = off.
    train.compilation_cache_dir = "auto"
    # Also checkpoint when this many minutes passed since the last one (0 = off; single-host).
    train.checkpoint_every_minutes = 0.0
    # Resume even if the config differs from the checkpointed run (e.g. more epochs).
    train.allow_config_change = False
    # A non-finite loss or gradient: stop (keep the last good checkpoint) | rollback (restore
    # the last checkpoint and continue with the learning rate scaled by nan_lr_factor; at most
    # 3 times).
    train.on_nan = "stop"
    train.nan_lr_factor = 0.5
    # Test hook: make the loss of this step NaN while the learning-rate scale is 1 (0 = off).
    train.debug_nan_step = 0
    # Exponential moving average of the parameters (and BatchNorm statistics), updated every
    # step: ema = decay * ema + (1 - decay) * params; 0 = off. When on, validation, the best
    # checkpoint, the test report and exports use the averaged weights; it is checkpointed and
    # resumed bitwise. 0.999 suits runs of a few thousand steps.
    train.ema_decay = 0.0
    # Early stopping: stop when train.best_metric has not improved for this many epochs
    # (0 = off); the test report then uses the best checkpoint as always.
    train.patience = 0
    # Epoch after which the model.freeze groups start training (at optim.backbone_lr_scale times
    # the learning rate), within the same run; 0 = never.
    train.unfreeze_at_epoch = 0

    # ---------------------------------------------------------------- class imbalance
    config.sampling = sampling = ml_collections.ConfigDict()
    # Resampling touches the training split only: neighbours are searched among training
    # examples, and validation/test are never resampled. (SMOTE before the split, a common
    # recipe, leaks: a synthetic training face interpolates towards a test face, so the test
    # score measures memory of the test set.) No resampled images are ever stored: the sampler
    # yields index records (i, j, lambda) and the train step builds x_i + lambda (x_j - x_i) on
    # the device, with fresh pairs and lambdas every epoch (deterministic from seed and epoch).
    # Per-class counts before/after go to the log and to sampling_report.json in the workdir.
    #
    # none (plain shuffled epochs) | random (RandomOverSampler: copies) | smote (imblearn SMOTE:
    # i uniform in the class, j one of its k nearest same-class neighbours, lambda ~ U(0, 1)) |
    # adasyn (as smote, but i drawn with ADASYN's weights: more records for examples whose
    # neighbours are of other classes) | class_weight (no resampling; inverse-frequency loss
    # weights).
    sampling.method = "none"
    # imbalanced-learn's sampling_strategy (random, smote, adasyn): auto | not majority |
    # minority | not minority | all, a ratio in (0, 1] (every class oversampled up to that
    # fraction of the largest class: partial balancing, for any number of classes), or
    # per-class counts "happy:4000,sad:4000".
    sampling.strategy = "auto"
    # Neighbours for smote / adasyn (a class with at most k examples uses all its others; a class
    # that needs synthetic records must have at least 2 examples).
    sampling.k_neighbors = 5
    # Feature space of the neighbour search (smote / adasyn), done once on the host:
    # pca (default: a randomized PCA of the pixels, fitted on 4,096 training examples and
    # streamed over uint8 batches; on FER2013-sized data it needs far less memory and time than
    # imblearn's fit_resample, see bench/README.md and bench/smote_memory.py; nearly all of its
    # neighbours agree with an exact PCA's) | pixels (raw 48x48 pixels: the very neighbours
    # imblearn's SMOTE finds, at the cost of a float32 copy of the largest resampled class, or
    # of the whole training split for adasyn).
    # Refreshing neighbours in the model's embedding during training is not implemented.
    sampling.features = "pca"
    # Dimensions of the pca feature space.
    sampling.pca_components = 64

    # ---------------------------------------------------------------- loss
    config.loss = loss = ml_collections.ConfigDict()
    # The training loss (ferjax/training/losses.py; each works with soft targets from label
    # smoothing, mixup/cutmix, SMOTE interpolation and FER+ vote probabilities, and with every
    # sampler): cross_entropy | focal (Lin et al. 2017: (1 - p)^gamma down-weights easy
    # examples) | class_balanced (Cui et al. 2019: class weights (1 - beta) / (1 - beta^n_c),
    # normalised to mean 1 over classes) | logit_adjusted (Menon et al. 2021: cross-entropy of
    # logits + tau * log prior) | balanced_softmax (Ren et al. 2020: logits + log prior) | ldam
    # (Cao et al. 2019: the true class's logit lowered by a margin proportional to n_c^(-1/4),
    # the largest max_margin, logits scaled by scale; with deferred re-weighting from drw_epoch).
    # The class prior is that of the training records after sampling (resampling and class
    # weights included); the log says which prior a run used.
    loss.name = "cross_entropy"
    loss.gamma = 2.0  # focal
    loss.beta = 0.9999  # class_balanced, and ldam's deferred re-weighting
    loss.tau = 1.0  # logit_adjusted
    loss.max_margin = 0.5  # ldam
    # ldam: logits scaled by this. The paper's s = 30 scales cosine logits (a normalised
    # classifier, outputs in [-1, 1]); ferjax's heads give unnormalised logits, where s = 30
    # saturates the softmax at the first step and the run collapses to one class (measured on
    # the demo), so the default is 1.
    loss.scale = 1.0
    # Deferred re-weighting (ldam, or any loss): class-balanced weights (loss.beta) switched on
    # from this epoch (0-based); 0 = off for every loss but ldam, whose default is then 0.8 x
    # train.num_epochs. -1 = never.
    loss.drw_epoch = 0

    # ---------------------------------------------------------------- augmentation
    config.augment = augment = ml_collections.ConfigDict()
    # Chain of on-device ops, "|"-separated, each with optional k=v arguments, applied inside
    # the jitted train step (ferjax/data/augment/ops.py documents each op and its arguments):
    #   per example: flip(p) | shift(pad) | crop(min_scale, max_ratio) (random resized crop) |
    #     rotate(degrees) | brightness(delta) | contrast(lower, upper) | gamma(lower, upper) |
    #     noise(std) | blur(sigma, p) | erase(p, min_area, max_area) (random erasing);
    #   per batch, soft targets: mixup(alpha) | cutmix(alpha, p).
    #   automatic policies: trivial_augment (one op of a fixed list, random magnitude) |
    #     rand_augment(n, m) (n ops of the list, magnitude m of 30).
    # Example: "flip|shift(pad=4)|rotate(degrees=10)|erase(p=0.5)". Empty = no augmentation.
    augment.ops = "flip|shift(pad=4)"

    # ---------------------------------------------------------------- evaluation
    config.eval = eval_ = ml_collections.ConfigDict()
    # Test-time augmentation, softmax averaged over the views: none | flip (image and mirror) |
    # ten_crop (4 corner crops + centre crop of tta_crop x the size, resized back, and their
    # mirrors). report.json records which one produced the numbers.
    eval_.tta = "none"
    eval_.tta_crop = 0.9
    # Post-hoc logit adjustment (Menon et al. 2021) at evaluation: the predicted class is the
    # argmax of log p - tau * log prior (the training prior); 0 = off; "auto" picks tau in
    # 0..2 on the validation split by train.best_metric. report.json records the tau used.
    eval_.logit_adjust_tau = "0"
    # Device memory one evaluation call may use for its views' activations (MiB); 0 = auto
    # (a quarter of the device's memory, or of the host's available memory on CPU). The views
    # of test-time augmentation are classified in chunks that fit, whatever the model and size.
    eval_.memory_budget_mb = 0

    return config
