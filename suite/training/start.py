"""Where a run's weights start, decided once, before the network is chosen:
what train.py's first line says.

--pretrained auto (the default) starts photo-sized data from TF-slim's
ImageNet resnet_v1_50 (suite.training.pretrained fetches it into the cache),
as every tool our users know does: a few hundred photos per class learn far
more on ImageNet's features than from random weights. Small images (up to
SMALL_IMAGE_SIDE, Fashion-MNIST-like) keep training from scratch, and so does
a run whose --model, --shortcut or --stem has no published weights. When the
weights cannot be had (no network, a cache that cannot be written, a wrong
file), auto trains from scratch and says why in that first line, which
model.json keeps; --pretrained on makes them required, off never fetches.
"""
import dataclasses
import sys

from suite.plumbing.errors import UserError
from suite.training import pretrained
from suite.training.config import (PRETRAINED_MODEL, default_image_size, default_stem,
                                   median_side)

CHOICES = ("auto", "on", "off")


@dataclasses.dataclass(frozen=True)
class Decision:
    """The start of a run: release (the TF-slim checkpoint's name, for
    model.json's "pretrained") and weights (the checkpoint to load) when
    starting from published weights; weights alone for --init_checkpoint;
    neither from random weights or when resuming. why: the first line."""
    why: str
    release: str = None
    weights: str = None

    @property
    def from_scratch(self):
        return self.weights is None


def decide(args, info, stored=None):
    """The Decision for train.py's parsed flags on the data of info (its
    dataset.json); stored: the model.json of the run being resumed. Fetches
    the published weights when they are to be used (printing the download's
    progress); with --pretrained on a failure is the UserError."""
    if stored is not None:
        started = stored.get("pretrained") or stored.get("training", {}).get("init_checkpoint")
        return Decision(f"start: resuming {args.model_dir} (it started from "
                        f"{started or 'random weights'})", release=stored.get("pretrained"))
    if args.init_checkpoint:
        return Decision(f"start: the weights of --init_checkpoint {args.init_checkpoint}",
                        weights=args.init_checkpoint)
    if args.pretrained == "off":
        return Decision("start: random weights (--pretrained off)")
    model = args.model or PRETRAINED_MODEL
    if args.pretrained == "on":
        return _published(args, model, "--pretrained on")
    not_for_them = _why_not_pretrained(args, info)
    if not_for_them:
        return Decision(f"start: random weights, as {not_for_them}")
    try:
        return _published(args, model, f"the images are photo-sized (median side "
                                        f"{median_side(info):g} px)")
    except UserError as error:
        return Decision(f"start: random weights, as TF-slim's ImageNet weights cannot be "
                        f"had: {error}; --pretrained off skips them")


def _published(args, model, because):
    """Decision for TF-slim's weights for model, fetched (or from the cache)."""
    weights = pretrained.fetch(model, args.pretrained_cache, out=sys.stderr)  # stdout: the start
    release = pretrained.release(model)
    return Decision(f"start: TF-slim's ImageNet weights ({release}), as {because}; "
                    f"--pretrained off trains from random weights", release, weights)


def _why_not_pretrained(args, info):
    """Why --pretrained auto leaves this run at random weights, or None."""
    side = args.image_size or default_image_size(info)
    stem = args.stem or default_stem(side)
    if stem == "small":
        return (f"the images are small (median side {median_side(info):g} px, the small stem) "
                f"and ImageNet's weights are for photos; --pretrained on uses them anyway")
    if args.model and args.model not in pretrained.PUBLISHED:
        return (f"TF-slim publishes no ImageNet weights for --model {args.model} (it does for "
                f"{', '.join(pretrained.PUBLISHED)})")
    if args.shortcut not in (None, "B"):
        return (f"--shortcut {args.shortcut} is not TF-slim's resnet_v1 (B), whose ImageNet "
                f"weights there are")
    return None

