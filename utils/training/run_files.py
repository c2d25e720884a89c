"""The names of what a training run writes into its folder, declared once for everything that writes or
looks for them (the trainer, the epoch loop, the outputs, --resume, --evolve, the demo)."""

LAST_CHECKPOINT = "last.pth"  # what --resume reads
BEST_CHECKPOINT = "best.pth"  # the best mAP@0.5 so far, what detect.py finds by default
LAST_WEIGHTS, BEST_WEIGHTS = "last.weights", "best.weights"  # Darknet exports of the two checkpoints
CHECKPOINT_PAIRS = ((LAST_CHECKPOINT, LAST_WEIGHTS), (BEST_CHECKPOINT, BEST_WEIGHTS))  # a .pth, its export
RESULTS_TABLE = "results.csv"  # a row per epoch
NOT_EVALUATED = ""  # its mAP cells for an epoch without evaluation
RESULTS_PLOT = "results.png"  # the table's losses and mAP
GAMMAS_PLOT = "bn_gammas.png"  # with --sr: the BN |gamma| distribution per evaluation
GAMMAS_FILE = "bn_gammas.npz"  # the values it plots, which a resumed run reads back
RUN_CFG = "model.cfg"  # the cfg as trained: classes and --hyp values written in
RESULTS = (RESULTS_TABLE, LAST_CHECKPOINT)  # a run folder holding neither has nothing worth keeping
LABELS_PLOT = "labels.png"  # the training boxes' classes, sizes and places
