"""Everything before the model: readers (sources/), the shard store (store/), cleaning, class
selection, preprocessing, on-device augmentation ops, sampling and the training input."""
