"""The 18-point OpenPose body layout (``coco18``): keypoint order, names and limbs.

"Right" and "left" are the dancer's own sides: facing the camera, the right side is on the image's left.
"""

from __future__ import annotations

LAYOUT = "coco18"

NAMES = (
    "nose",
    "neck",
    "right_shoulder",
    "right_elbow",
    "right_wrist",
    "left_shoulder",
    "left_elbow",
    "left_wrist",
    "right_hip",
    "right_knee",
    "right_ankle",
    "left_hip",
    "left_knee",
    "left_ankle",
    "right_eye",
    "left_eye",
    "right_ear",
    "left_ear",
)
NUM_KEYPOINTS = len(NAMES)
INDEX = {name: i for i, name in enumerate(NAMES)}

NOSE, NECK = 0, 1
R_SHOULDER, R_ELBOW, R_WRIST = 2, 3, 4
L_SHOULDER, L_ELBOW, L_WRIST = 5, 6, 7
R_HIP, R_KNEE, R_ANKLE = 8, 9, 10
L_HIP, L_KNEE, L_ANKLE = 11, 12, 13
R_EYE, L_EYE, R_EAR, L_EAR = 14, 15, 16, 17

# The 17 limbs OpenPose draws for coco18 (pairs of keypoint indices), in its drawing order.
LIMBS = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10),
    (1, 11), (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
)  # fmt: skip

# Body-part labels of the per-pixel label maps ``animlcm synth`` writes (``idNNN_clipMM.parts.npz``): the
# index is the label value. "left"/"right" are the dancer's own sides, as for the keypoints above.
PART_NAMES = (
    "background",
    "head",  # head, hair (long hair and bun too), neck, ears, face features
    "torso",  # torso with belt, skirt
    "left_arm",  # upper arm, forearm, sleeves
    "right_arm",
    "left_leg",  # thigh, shin, shorts
    "right_leg",
    "hands",  # both hands, gloves
    "feet",  # shoes
)
BACKGROUND, HEAD, TORSO, LEFT_ARM, RIGHT_ARM, LEFT_LEG, RIGHT_LEG, HANDS, FEET = range(len(PART_NAMES))
