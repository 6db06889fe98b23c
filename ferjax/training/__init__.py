"""The train step, optimisers, the program builder, the loop, checkpoints and logs."""
