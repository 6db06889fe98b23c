"""A quick CPU check on real data: a small CNN (32/64/128 channels) with SMOTE and AdamW on
FER2013 (or any source), meant for a subset of a few thousand faces and a few CPU minutes.

python -m ferjax.main --config=configs/quick.py --workdir=runs/quick \
    --config.data.path=data/fer2013.csv --config.data.subset=2000 \
    --config.data.classes=happy,sad,neutral

Why not configs/cnn.py with fewer epochs: its SGD 0.05 recipe with a 512-wide VGG head is tuned
for 100 epochs of the full set; on 2,000 faces for 5 epochs it ends at chance (every face one
class). AdamW 2e-3 with per-image standardisation learns from the first epoch at every size
(bench/peer_cnn.py compares it with a PyTorch build of the same network and recipe).
"""

import runpy
from pathlib import Path


def get_config():
    config = runpy.run_path(str(Path(__file__).with_name("default.py")))["get_config"]()
    config.data.name = "fer2013"
    config.data.normalize = "per_image"
    config.sampling.method = "smote"
    config.model.name = "cnn"
    config.model.cnn_widths = "32,64,128"
    config.model.cnn_convs_per_stage = 1
    config.model.cnn_hidden = 128
    config.model.dropout = 0.3
    config.optim.name = "adamw"
    config.optim.learning_rate = 2e-3
    config.optim.weight_decay = 1e-4
    config.train.num_epochs = 20
    config.train.batch_size = 64
    config.train.log_every_steps = 20
    config.train.best_metric = "balanced_accuracy"
    return config
