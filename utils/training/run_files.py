"""The names of what a training run writes into its folder, declared once for everything that writes or
looks for them (the trainer, the epoch loop, the outputs, --resume, --evolve, the demo)."""

LAST_CHECKPOINT = "last.pth"  # what --resume reads
BEST_CHECKPOINT = "best.pth"  # the best mAP@0.5 so far, what detect.py finds by default
RESULTS_TABLE = "results.csv"  # a row per epoch
RUN_CFG = "model.cfg"  # the cfg as trained: classes and --hyp values written in
RESULTS = (RESULTS_TABLE, LAST_CHECKPOINT)  # a run folder holding neither has nothing worth keeping
LABELS_PLOT = "labels.png"  # the training boxes' classes, sizes and places
