"""Fine-tuning's start: the weights of another checkpoint, as TF-slim's
train_image_classifier.py takes them (--init_checkpoint, --exclude_scopes)."""
import os
import re

import tensorflow as tf

from suite.model.checkpoints import list_checkpoints
from suite.plumbing.errors import UserError, reason
from suite.training.step import scopes


def warm_start(session, path, exclude_scopes, report=True):
    """Loads the variables of checkpoint `path` that exist there with the same
    shape, except exclude_scopes; reports what it left at initialisation.

    A TF-slim resnet_v1_50/101/152 checkpoint (e.g. the published ImageNet
    ones) names our "resnet/..." variables "resnet_v1_50/..."; with
    --shortcut B every other part of the name and shape is the same.
    """
    if os.path.isdir(path):
        found = list_checkpoints(path)
        if not found:
            raise UserError(f"--init_checkpoint {path} holds no checkpoint")
        path = found[0]
    try:
        shapes = tf.train.load_checkpoint(path).get_variable_to_shape_map()
    except (tf.errors.OpError, ValueError) as error:
        raise UserError(f"--init_checkpoint {path} cannot be read ({reason(error)})")
    slim_roots = {name.split("/")[0] for name in shapes if re.match(r"resnet_v1_\d+/", name)}
    root = slim_roots.pop() if len(slim_roots) == 1 else "resnet"
    excluded = scopes(exclude_scopes)
    restore, skipped, left_out = {}, [], []
    candidates = {v.op.name: v for v in
                  tf.compat.v1.model_variables() + tf.compat.v1.trainable_variables()}
    for name, variable in sorted(candidates.items()):
        if any(name.startswith(s) for s in excluded):
            left_out.append(name)
            continue
        stored_name = root + name[len("resnet"):] if name.startswith("resnet/") else name
        if shapes.get(stored_name) == variable.shape.as_list():
            restore[stored_name] = variable
        else:
            skipped.append(name)
    if not restore:
        raise UserError(f"--init_checkpoint {path} has none of this network's variables")
    tf.compat.v1.train.Saver(restore).restore(session, path)
    if report:
            print(f"initialised {len(restore)} variables from {path}; left at their initial "
              f"values: {len(left_out)} excluded by --exclude_scopes, {len(skipped)} not in it "
              f"or of another shape"
              f"{' (e.g. ' + ', '.join(skipped[:3]) + ')' if skipped else ''}")
