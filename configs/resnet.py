"""ResNet-18 on FER2013, close to the published single-network recipes (~73% test accuracy):
SGD with Nesterov momentum 0.9, weight decay 5e-4, warm-up + cosine over 200 epochs, batch 128,
dropout before the classifier, flips and shifts.

python -m ferjax.main --config=configs/resnet.py --workdir=runs/resnet18 \
  --config.data.path=/data/fer2013.csv
"""

import runpy
from pathlib import Path


def get_config():
    config = runpy.run_path(str(Path(__file__).with_name("default.py")))["get_config"]()
    config.data.name = "fer2013"
    config.model.name = "resnet18"
    config.model.dropout = 0.3
    config.optim.name = "sgd"
    config.optim.learning_rate = 0.1
    config.optim.weight_decay = 5e-4
    config.optim.warmup_epochs = 5.0
    config.optim.schedule = "cosine"
    config.train.batch_size = 128
    config.train.num_epochs = 200
    config.train.label_smoothing = 0.1
    return config
