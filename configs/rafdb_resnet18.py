"""RAF-DB (basic): an ImageNet-pretrained ResNet-18 in colour at 112x112, the usual baseline.

Data: RAF-DB is released on request by its authors (http://www.whdeng.cn/raf/model1.html);
unpack the `basic` set so that
    data/RAF-DB/basic/EmoLabel/list_patition_label.txt      (train_00001.jpg 5, ...; 1..7)
    data/RAF-DB/basic/Image/aligned/train_00001_aligned.jpg (100x100 aligned faces)
Train (12,271 faces) and test (3,068) are used as released; validation is carved from train
(data.val_fraction, data.split_seed). Classes in RAF-DB's order: surprise, fear, disgust, happy,
sad, angry, neutral.

Weights: torchvision's or timm's ImageNet ResNet-18 (e.g. timm `resnet18.a1_in1k`
model.safetensors, or torchvision's resnet18-f37072fd.pth), converted once:
    ferjax convert model.safetensors r18.msgpack --model=resnet18
Train:
    python -m ferjax.main --config=configs/rafdb_resnet18.py --workdir=runs/rafdb-r18 \
        --config.data.path=data/RAF-DB/basic --config.model.init_from=r18.msgpack

Expected: an ImageNet ResNet-18 fine-tuned in colour at 112-224 px reaches ~86-88% test accuracy
in the literature (stronger methods: DAN 89.70%, POSTER++ 92.21%). On one modern GPU (H100,
bfloat16) an epoch of 12k faces at 112 px is seconds of compute, an estimate from the rates in
bench/README.md; not measured here: no GPU was available to this project's tests.
"""

import runpy
from pathlib import Path


def get_config():
    config = runpy.run_path(str(Path(__file__).with_name("default.py")))["get_config"]()
    config.data.name = "rafdb"
    config.data.channels = 3
    config.data.image_size = 112
    config.data.normalize = "imagenet"  # the statistics the pretrained weights expect
    config.model.name = "resnet18"  # the ImageNet stem from 96 px (model.stem=auto)
    config.model.dropout = 0.3
    config.optim.name = "adamw"
    config.optim.learning_rate = 3e-4
    config.optim.weight_decay = 1e-4
    config.optim.warmup_epochs = 1.0
    config.train.batch_size = 64
    config.train.num_epochs = 40
    config.train.label_smoothing = 0.1
    config.train.dtype = "bfloat16"
    # Colour augmentation: geometry, light, colour cast and occlusion.
    config.augment.ops = (
        "flip|crop(min_scale=0.8)|rotate(degrees=10)|brightness(delta=20)|contrast|"
        "saturation|hue(degrees=5)|erase(p=0.25)"
    )
    config.eval.tta = "flip"
    return config
