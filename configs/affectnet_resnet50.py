"""AffectNet: an ImageNet-pretrained ResNet-50 in colour at 224x224 with class-balanced sampling.

Data: AffectNet is released on request (http://mohammadmahoor.com/affectnet/). Put the CSVs and
the images so that
    data/AffectNet/Manually_Annotated_file_lists/training.csv, validation.csv
    data/AffectNet/Manually_Annotated_Images/<subDirectory>/<file>.jpg
(training.csv / validation.csv directly under data/AffectNet/, and
Manually_Annotated_compressed/Manually_Annotated_Images/ are found too). Faces are cropped by
each row's box. data.affectnet_classes = 8 keeps contempt, 7 drops it; none, uncertain and
no-face rows are dropped and counted. The released validation set is the test split (as in the
literature); validation is carved from training.

~287k faces at 224 px are ~45 GB of pixels: data.placement=auto converts them once into a shard
store (data.shards_dir; progress and images/s are printed; an interrupted conversion resumes)
and streams them when they do not fit in host memory.

Weights: torchvision's or timm's ImageNet ResNet-50, converted once:
    ferjax convert model.safetensors r50.msgpack --model=resnet50
Train:
    python -m ferjax.main --config=configs/affectnet_resnet50.py --workdir=runs/affectnet-r50 \
        --config.data.path=data/AffectNet --config.model.init_from=r50.msgpack

Expected: an ImageNet ResNet-50 baseline is in the low-to-mid 60s on AffectNet-8 and mid 60s on
AffectNet-7 (stronger methods: DAN 65.69% on AffectNet-7, POSTER++ 67.49% AffectNet-7 and 63.77%
AffectNet-8). Balanced sampling makes an epoch ~8 x 134k happy faces = ~1.07M records: minutes
of compute on one H100 in bfloat16, an estimate from the rates in bench/README.md; not measured
here, no GPU was available to this project's tests.
"""

import runpy
from pathlib import Path


def get_config():
    config = runpy.run_path(str(Path(__file__).with_name("default.py")))["get_config"]()
    config.data.name = "affectnet"
    config.data.affectnet_classes = 8
    config.data.channels = 3
    config.data.image_size = 224
    config.data.normalize = "imagenet"
    config.model.name = "resnet50"
    config.model.dropout = 0.3
    # Class-balanced epochs: every class oversampled to the largest (imbalanced-learn semantics).
    config.sampling.method = "random"
    config.sampling.strategy = "not majority"
    config.optim.name = "sgd"
    config.optim.learning_rate = 0.02
    config.optim.weight_decay = 1e-4
    config.optim.warmup_epochs = 0.2
    config.train.batch_size = 256
    config.train.num_epochs = 6
    config.train.label_smoothing = 0.1
    config.train.dtype = "bfloat16"
    config.train.log_every_steps = 200
    config.train.checkpoint_every_minutes = 15.0
    config.augment.ops = (
        "flip|crop(min_scale=0.7)|rotate(degrees=10)|brightness(delta=25)|contrast|saturation|"
        "hue(degrees=5)|erase(p=0.25)"
    )
    config.eval.tta = "flip"
    return config
