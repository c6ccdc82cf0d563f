"""Category lists of COCO, YouTube-VIS 2021 and OVIS (YouTube-VIS 2019: :data:`crossvis.data.ytvis.
YTVIS2019_CATEGORIES`), and the tables that map each video dataset's classes to COCO classes.

Lists are in category-id order (ids 1..N for the video datasets; COCO's 80 classes in ascending id order,
i.e. the contiguous order of detectron2/AdelaiDet checkpoints, whose ``cls_logits`` row c is class c).

A mapping table is ``{target class name: COCO class name or None}``; ``model.init_class_map`` uses it to copy
the classifier rows of a COCO CondInst into the classes that match. Judgement calls (see docs/recipes.md):

- same object under another name: sedan -> car, motorbike -> motorcycle, tennis_racket -> tennis racket,
  flying_disc -> frisbee, airplane/truck/boat/train -> the same COCO name;
- a species of a COCO class: parrot, duck, owl, eagle, poultry -> bird; giant_panda -> bear (COCO's "bear"
  images include pandas);
- OVIS "Vehical" (cars, buses, trucks, vans) -> car, its most common member;
- no COCO class: ape, monkey, lizard, snake, rabbit, fish, turtle, leopard, fox, deer, tiger, shark, frog,
  earless_seal, squirrel, whale -> None (leopard/tiger are not COCO's domestic "cat");
- hand -> None (COCO has no hand class; hands are part of "person" masks);
- mouse (the animal) -> None (COCO "mouse" is a computer mouse).
Several targets may share one COCO row (all birds start from "bird"); they diverge in training.
"""

from __future__ import annotations

COCO_CATEGORIES = [
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
]  # fmt: skip

YTVIS2021_CATEGORIES = [
    "airplane", "bear", "bird", "boat", "car", "cat", "cow", "deer", "dog", "duck", "earless_seal",
    "elephant", "fish", "flying_disc", "fox", "frog", "giant_panda", "giraffe", "horse", "leopard", "lizard",
    "monkey", "motorbike", "mouse", "parrot", "person", "rabbit", "shark", "skateboard", "snake", "snowboard",
    "squirrel", "surfboard", "tennis_racket", "tiger", "train", "truck", "turtle", "whale", "zebra",
]  # fmt: skip

OVIS_CATEGORIES = [
    "Person", "Bird", "Cat", "Dog", "Horse", "Sheep", "Cow", "Elephant", "Bear", "Zebra", "Giraffe",
    "Poultry", "Giant_panda", "Lizard", "Parrot", "Monkey", "Rabbit", "Tiger", "Fish", "Turtle", "Bicycle",
    "Motorcycle", "Airplane", "Boat", "Vehical",
]  # fmt: skip

# Video class -> COCO class, for every class name of the three datasets (lower-cased); None: no COCO class.
_TO_COCO: dict[str, str | None] = {
    # same name in COCO
    "person": "person", "skateboard": "skateboard", "dog": "dog", "cat": "cat", "cow": "cow",
    "train": "train", "horse": "horse", "bear": "bear", "giraffe": "giraffe", "surfboard": "surfboard",
    "airplane": "airplane", "truck": "truck", "zebra": "zebra", "elephant": "elephant",
    "snowboard": "snowboard", "boat": "boat", "bird": "bird", "car": "car", "sheep": "sheep",
    "bicycle": "bicycle", "motorcycle": "motorcycle",
    # another name for the same thing
    "sedan": "car", "motorbike": "motorcycle", "tennis_racket": "tennis racket", "flying_disc": "frisbee",
    # a species of a COCO class
    "parrot": "bird", "duck": "bird", "owl": "bird", "eagle": "bird", "poultry": "bird", "giant_panda": "bear",
    # a group whose most common member is a COCO class
    "vehical": "car",
    # no COCO class
    "ape": None, "monkey": None, "lizard": None, "snake": None, "rabbit": None, "fish": None, "turtle": None,
    "leopard": None, "fox": None, "deer": None, "tiger": None, "shark": None, "frog": None,
    "earless_seal": None, "squirrel": None, "whale": None, "hand": None, "mouse": None,
}  # fmt: skip


def _table(names: list[str]) -> dict[str, str | None]:
    return {n: _TO_COCO[n.lower()] for n in names}


def class_map_tables() -> dict[str, dict[str, str | None]]:
    """The shipped ``model.init_class_map`` tables: ytvis2019, ytvis2021, ovis (target name -> COCO name)."""
    from crossvis.data.ytvis import YTVIS2019_CATEGORIES

    return {
        "ytvis2019": _table(YTVIS2019_CATEGORIES),
        "ytvis2021": _table(YTVIS2021_CATEGORIES),
        "ovis": _table(OVIS_CATEGORIES),
    }
