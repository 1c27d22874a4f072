"""COCO-Stuff 182 fine classes and their 27 coarse groups ("cocostuff27", as used by IIC and STEGO).

COCO-Stuff label PNGs (``stuffthingmaps``) store ``fine id = COCO category id - 1``:

* ids 0..90 are the 91 COCO "thing" category slots (80 used, 11 never annotated, such as
  "street sign"), grouped by the COCO supercategory;
* ids 91..181 are the 91 "stuff" classes, grouped by the COCO-Stuff hierarchy;
* 255 is "unlabeled".

The 27 coarse classes are ordered as in STEGO/IIC: the 12 thing supercategories first, then the 15
stuff supercategories (see `COARSE_NAMES`). Two names occur twice ("food", "furniture": once as a
thing group, once as a stuff group); `COARSE_NAMES` spells the stuff ones with a ``-stuff``
suffix so that every name is unique.
"""

from __future__ import annotations

__all__ = ["COARSE_NAMES", "FINE_CLASSES", "FINE_TO_COARSE", "fine_to_coarse_table"]

THING_GROUPS: tuple[str, ...] = (
    "electronic", "appliance", "food", "furniture", "indoor", "kitchen",
    "accessory", "animal", "outdoor", "person", "sports", "vehicle",
)
STUFF_GROUPS: tuple[str, ...] = (
    "ceiling", "floor", "food-stuff", "furniture-stuff", "raw-material", "textile", "wall",
    "window", "building", "ground", "plant", "sky", "solid", "structural", "water",
)
COARSE_NAMES: tuple[str, ...] = THING_GROUPS + STUFF_GROUPS

# Thing slots in COCO category-id order (fine id = position); unused slots are marked with "*".
_THINGS: tuple[tuple[str, str], ...] = (
    ("person", "person"),
    ("bicycle", "vehicle"), ("car", "vehicle"), ("motorcycle", "vehicle"),
    ("airplane", "vehicle"), ("bus", "vehicle"), ("train", "vehicle"), ("truck", "vehicle"),
    ("boat", "vehicle"),
    ("traffic light", "outdoor"), ("fire hydrant", "outdoor"), ("street sign*", "outdoor"),
    ("stop sign", "outdoor"), ("parking meter", "outdoor"), ("bench", "outdoor"),
    ("bird", "animal"), ("cat", "animal"), ("dog", "animal"), ("horse", "animal"),
    ("sheep", "animal"), ("cow", "animal"), ("elephant", "animal"), ("bear", "animal"),
    ("zebra", "animal"), ("giraffe", "animal"),
    ("hat*", "accessory"), ("backpack", "accessory"), ("umbrella", "accessory"),
    ("shoe*", "accessory"), ("eye glasses*", "accessory"), ("handbag", "accessory"),
    ("tie", "accessory"), ("suitcase", "accessory"),
    ("frisbee", "sports"), ("skis", "sports"), ("snowboard", "sports"), ("sports ball", "sports"),
    ("kite", "sports"), ("baseball bat", "sports"), ("baseball glove", "sports"),
    ("skateboard", "sports"), ("surfboard", "sports"), ("tennis racket", "sports"),
    ("bottle", "kitchen"), ("plate*", "kitchen"), ("wine glass", "kitchen"), ("cup", "kitchen"),
    ("fork", "kitchen"), ("knife", "kitchen"), ("spoon", "kitchen"), ("bowl", "kitchen"),
    ("banana", "food"), ("apple", "food"), ("sandwich", "food"), ("orange", "food"),
    ("broccoli", "food"), ("carrot", "food"), ("hot dog", "food"), ("pizza", "food"),
    ("donut", "food"), ("cake", "food"),
    ("chair", "furniture"), ("couch", "furniture"), ("potted plant", "furniture"),
    ("bed", "furniture"), ("mirror*", "furniture"), ("dining table", "furniture"),
    ("window*", "furniture"), ("desk*", "furniture"), ("toilet", "furniture"),
    ("door*", "furniture"),
    ("tv", "electronic"), ("laptop", "electronic"), ("mouse", "electronic"),
    ("remote", "electronic"), ("keyboard", "electronic"), ("cell phone", "electronic"),
    ("microwave", "appliance"), ("oven", "appliance"), ("toaster", "appliance"),
    ("sink", "appliance"), ("refrigerator", "appliance"), ("blender*", "appliance"),
    ("book", "indoor"), ("clock", "indoor"), ("vase", "indoor"), ("scissors", "indoor"),
    ("teddy bear", "indoor"), ("hair drier", "indoor"), ("toothbrush", "indoor"),
    ("hair brush*", "indoor"),
)

# Stuff classes in COCO-Stuff id order (fine id = 91 + position), with their stuff group.
_STUFF: tuple[tuple[str, str], ...] = (
    ("banner", "textile"), ("blanket", "textile"), ("branch", "plant"), ("bridge", "building"),
    ("building-other", "building"), ("bush", "plant"), ("cabinet", "furniture-stuff"),
    ("cage", "structural"), ("cardboard", "raw-material"), ("carpet", "floor"),
    ("ceiling-other", "ceiling"), ("ceiling-tile", "ceiling"), ("cloth", "textile"),
    ("clothes", "textile"), ("clouds", "sky"), ("counter", "furniture-stuff"),
    ("cupboard", "furniture-stuff"), ("curtain", "textile"), ("desk-stuff", "furniture-stuff"),
    ("dirt", "ground"), ("door-stuff", "furniture-stuff"), ("fence", "structural"),
    ("floor-marble", "floor"), ("floor-other", "floor"), ("floor-stone", "floor"),
    ("floor-tile", "floor"), ("floor-wood", "floor"), ("flower", "plant"), ("fog", "water"),
    ("food-other", "food-stuff"), ("fruit", "food-stuff"), ("furniture-other", "furniture-stuff"),
    ("grass", "plant"), ("gravel", "ground"), ("ground-other", "ground"), ("hill", "solid"),
    ("house", "building"), ("leaves", "plant"), ("light", "furniture-stuff"), ("mat", "textile"),
    ("metal", "raw-material"), ("mirror-stuff", "furniture-stuff"), ("moss", "plant"),
    ("mountain", "solid"), ("mud", "ground"), ("napkin", "textile"), ("net", "structural"),
    ("paper", "raw-material"), ("pavement", "ground"), ("pillow", "textile"),
    ("plant-other", "plant"), ("plastic", "raw-material"), ("platform", "ground"),
    ("playingfield", "ground"), ("railing", "structural"), ("railroad", "ground"),
    ("river", "water"), ("road", "ground"), ("rock", "solid"), ("roof", "building"),
    ("rug", "textile"), ("salad", "food-stuff"), ("sand", "ground"), ("sea", "water"),
    ("shelf", "furniture-stuff"), ("sky-other", "sky"), ("skyscraper", "building"),
    ("snow", "ground"), ("solid-other", "solid"), ("stairs", "furniture-stuff"),
    ("stone", "solid"), ("straw", "plant"), ("structural-other", "structural"),
    ("table", "furniture-stuff"), ("tent", "building"), ("textile-other", "textile"),
    ("towel", "textile"), ("tree", "plant"), ("vegetable", "food-stuff"),
    ("wall-brick", "wall"), ("wall-concrete", "wall"), ("wall-other", "wall"),
    ("wall-panel", "wall"), ("wall-stone", "wall"), ("wall-tile", "wall"), ("wall-wood", "wall"),
    ("water-other", "water"), ("waterdrops", "water"), ("window-blind", "window"),
    ("window-other", "window"), ("wood", "solid"),
)

#: Fine class names indexed by fine id 0..181 (unused thing slots end with "*").
FINE_CLASSES: tuple[str, ...] = tuple(name for name, _ in _THINGS + _STUFF)

#: fine id (0..181) -> coarse id (0..26), derived from the group of each fine class.
FINE_TO_COARSE: dict[int, int] = {
    fine: COARSE_NAMES.index(group) for fine, (_, group) in enumerate(_THINGS + _STUFF)
}


def fine_to_coarse_table(ignore_index: int = 255) -> list[int]:
    """Lookup table of length 256: entry ``v`` is the coarse id of fine id ``v``.

    Fine ids 0..181 map through `FINE_TO_COARSE`; 255 ("unlabeled") maps to ``ignore_index``;
    ids 182..254 are not COCO-Stuff classes and map to themselves, so a range check downstream
    reports them instead of hiding them.
    """
    table = list(range(256))
    for fine, coarse in FINE_TO_COARSE.items():
        table[fine] = coarse
    table[255] = ignore_index
    return table

