"""VGG-style CNN on FER2013: SGD Nesterov, cosine schedule, 100 epochs.

python -m ferjax.main --config=configs/cnn.py --workdir=runs/cnn \
  --config.data.name=fer2013 --config.data.path=/data/fer2013.csv
"""

import runpy
from pathlib import Path


def get_config():
    config = runpy.run_path(str(Path(__file__).with_name("default.py")))["get_config"]()
    config.data.name = "fer2013"
    config.model.name = "cnn"
    config.optim.learning_rate = 0.05
    config.optim.weight_decay = 5e-4
    config.train.batch_size = 128
    config.train.num_epochs = 100
    return config
