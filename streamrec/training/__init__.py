"""Training: any configured model on procedural clips or on a folder of the user's clips.

A model trains on what it will see: clips are cut exactly as the streaming scheduler cuts
them and fitted as the capture thread fits them. One module per job:

- `windows`: which windows of a video are trained on, and their labels;
- `clips`: a window's frames, fitted and augmented;
- `data`: where videos come from (procedural scenes, a folder of clips, group scenes) and decoding;
- `dataset`: an epoch's training clips and the validation clips;
- `persons`: for person models (an RoI head), clips with the boxes and labels of the people on
  their keyframes, for training and for held-out keyframes;
- `model`: the network on clips (and boxes) as the engine feeds it, and fine-tuning's starting weights;
- `records`: the settings of a run and what it records;
- `tasks`: what a whole-clip or a person model learns from and is judged by;
- `run_state`: saving after every epoch and resuming;
- `loop`: the run itself (`train`); `report`: its TRAINING.md.
"""

from streamrec.training.clips import Augmentation, cut_clip, fit_clip
from streamrec.training.data import (
    DecodedVideo,
    FolderVideos,
    GroupScenes,
    ProceduralVideos,
    VideoSet,
    decode_video,
    folder_splits,
    group_splits,
    procedural_splits,
)
from streamrec.training.dataset import TrainingClips, curriculum, evaluation_clips
from streamrec.training.loop import Progress, train
from streamrec.training.model import engine_boxes, forward, initial_weights, predict, predict_boxes, takes_boxes
from streamrec.training.persons import (
    KeyframeSet,
    PersonClip,
    PersonClips,
    collate_person_clips,
    keyframe,
    keyframe_set,
    person_clip,
)
from streamrec.training.records import Accuracy, EpochRecord, PersonScore, TrainResult, TrainSettings
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
    "Accuracy", "Augmentation", "DecodedVideo", "EpochRecord", "FolderVideos", "GroupScenes", "KeyframeSet",
    "PersonClip", "PersonClips", "PersonScore", "ProceduralVideos", "Progress", "TrainResult", "TrainSettings",
    "TrainingClips", "Video", "VideoSet", "action_share", "centre_window", "choose_window", "collate_person_clips",
    "curriculum", "cut_clip", "decode_video", "engine_boxes", "evaluation_clips", "fit_clip", "folder_splits",
    "forward", "group_splits", "initial_weights", "keyframe", "keyframe_set", "label_for_share", "labelled_windows",
    "person_clip", "predict", "predict_boxes", "procedural_splits", "takes_boxes", "train", "training_report",
    "window_label",
]
