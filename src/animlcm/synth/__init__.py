"""The synthetic dancer world: seeded identities, smooth dance motions, a renderer and a clip generator.

No real teacher weights or datasets can be downloaded here, so distillation quality is measured on a world
whose ground truth is exact: every frame's 18-point pose is known. Modules (numpy + OpenCV only, no torch):

- ``layout``: the coco18 (OpenPose) keypoint names and limbs; the body-part label names.
- ``seeds``: the seed space; train and heldout splits draw from disjoint streams.
- ``identity``: ``sample_identity(rng)`` / ``identity_for(seed, index, split)``: a dancer's look.
- ``motion``: ``dance(...)`` / ``dance_keypoints(seed, num_frames, size, fps)``: the motion (also the
  built-in dance that drives ``animlcm render`` when no pose is given).
- ``background``: per-clip static backgrounds.
- ``draw``: ``draw_frame(identity, pose, background)`` / ``draw_layers`` (with coverage and part labels),
  ``reference_image(identity, size)``.
- ``parts``: the ``.parts.npz`` label-map file (``write_parts``, ``load_parts``).
- ``world``: ``generate(...)`` writes ``idNNN_clipMM.mp4`` + ``.pose.npz`` + ``.parts.npz``
  (body-part label maps) + ``synth.json``.
"""
