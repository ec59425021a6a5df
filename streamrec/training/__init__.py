"""Training: any configured model on procedural clips or on a folder of the user's clips.

A model trains on what it will see: clips are cut exactly as the streaming scheduler cuts
them and fitted as the capture thread fits them. One module per job:

- `windows`: which windows of a video are trained on, and their labels;
- `clips`: a window's frames, fitted and augmented;
- `data`: where videos come from (procedural scenes, a folder of clips) and decoding;
- `dataset`: an epoch's training clips and the validation clips;
- `model`: the network on clips as the engine feeds it, and fine-tuning's starting weights;
- `records`: the settings of a run and what it records;
- `run_state`: saving after every epoch and resuming;
- `loop`: the run itself (`train`); `report`: its TRAINING.md.
"""

from streamrec.training.clips import Augmentation, cut_clip, fit_clip
from streamrec.training.data import (
    DecodedVideo,
    FolderVideos,
    ProceduralVideos,
    VideoSet,
    decode_video,
    folder_splits,
    procedural_splits,
)
from streamrec.training.dataset import TrainingClips, curriculum, evaluation_clips
from streamrec.training.loop import Progress, train
from streamrec.training.model import forward, initial_weights, predict
from streamrec.training.records import Accuracy, EpochRecord, TrainResult, TrainSettings
from streamrec.training.report import training_report
from streamrec.training.windows import (
    Video,
    action_share,
    centre_window,
    choose_window,
    label_for_share,
    labelled_windows,
    window_label,
)

__all__ = [
    "Accuracy", "Augmentation", "DecodedVideo", "EpochRecord", "FolderVideos", "ProceduralVideos",
    "Progress", "TrainResult", "TrainSettings", "TrainingClips", "Video", "VideoSet", "action_share",
    "centre_window", "choose_window", "curriculum", "cut_clip", "decode_video", "evaluation_clips", "fit_clip",
    "folder_splits", "forward", "initial_weights", "label_for_share", "labelled_windows", "predict",
    "procedural_splits", "train", "training_report", "window_label",
]
