"""Class-per-folder images -> TFRecords, labels.txt and a report.

    python FlowIO.py [--image_dir data/images] [--output_dir data/tfrecords]
                     [--validation_ratio 0.2] [--seed 0] [--validation_dir DIR]
                     [--max_side N] [--num_shards N] [--workers N] [--overwrite]
                     [--exclude LIST]

Every top-level sub-folder of --image_dir is a class (sorted names; images in
deeper folders belong to it). Each file is decoded by content and stored as
an upright 8-bit RGB JPEG (suite.images.decoding); files that cannot be used
are skipped, each listed with its reason in dataset.json and counted by reason
(with a few examples) on the console: nothing is dropped silently.
--exclude leaves listed images out (mislabelled ones, say) without touching
the user's files; the report counts them and lists them in dataset.json.
Writes to --output_dir: labels.txt, train-*/validation-* TFRecord shards and
dataset.json, the report (suite.data.contract). A re-run replaces only those;
a non-empty folder that is not FlowIO's output is refused unless --overwrite;
one run at a time per folder (suite.data.output_dir).

The conversion is suite.data.convert; the input pipeline that reads the
records back is suite.data.pipeline.
"""
import sys

from suite.plumbing import environment

if __name__ == "__main__":
    environment.configure(verbose="--verbose" in sys.argv)  # before TensorFlow loads

from suite.data.convert import MAX_VALIDATION, Options, convert, print_report
from suite.plumbing import flags
from suite.plumbing.errors import run_main


def parse_args(argv=None):
    parser = flags.ArgumentParser(description="Convert a class-per-folder image tree to "
                                              "TFRecords.")
    parser.add_argument("--image_dir", default="data/images",
                        help="one sub-folder of images per class (default: %(default)s)")
    parser.add_argument("--output_dir", default=flags.DEFAULT_DATA_DIR,
                        help="where shards, labels.txt and dataset.json go (default: %(default)s)")
    parser.add_argument("--validation_ratio", type=flags.below_one,
                        default=Options.validation_ratio,
                        help="fraction of each class held out for validation "
                             "(default: %(default)s)")
    parser.add_argument("--max_validation", type=flags.non_negative_int, default=MAX_VALIDATION,
                        help="hold out at most about this many images in all, lowering "
                             "--validation_ratio for large sets; 0: no cap "
                             "(default: %(default)s)")
    parser.add_argument("--seed", type=flags.non_negative_int, default=Options.seed,
                        help="seed of the split and shard order (default: %(default)s)")
    parser.add_argument("--validation_dir", default=None,
                        help="a separate class-per-folder validation tree; "
                             "replaces --validation_ratio")
    parser.add_argument("--max_side", type=flags.int_in_range(32, 65500), default=None,
                        help="shrink images whose longer side exceeds this many pixels "
                             "(smaller, faster records; detail beyond it is lost)")
    parser.add_argument("--num_shards", type=flags.positive_int, default=None,
                        help="shards per split (default: ~100 MB each, several when large)")
    parser.add_argument("--workers", type=flags.positive_int, default=None,
                        help="processes decoding images (default: all cores)")
    parser.add_argument("--exclude", metavar="LIST", default=None,
                        help="leave out the images LIST names: a CSV with a 'file' or 'path' "
                             "column (as Evaluation.py's misclassified.csv), or one path a "
                             "line, as given or relative to --image_dir; the images stay "
                             "where they are, and the report counts them")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into a non-empty folder that is not FlowIO.py's output; "
                             "only files of the names FlowIO.py writes (labels.txt, "
                             "dataset.json, train-/validation-NNNNN-of-NNNNN.tfrecord) "
                             "are replaced, nothing else there is touched")
    return parser.parse_args(argv)


def main():
    args = parse_args()
    info = convert(args.image_dir, args.output_dir, validation_ratio=args.validation_ratio,
                   seed=args.seed, validation_dir=args.validation_dir, max_side=args.max_side,
                   num_shards=args.num_shards, workers=args.workers, overwrite=args.overwrite,
                   max_validation=args.max_validation, exclude=args.exclude)
    print_report(info, args.output_dir)


if __name__ == "__main__":
    run_main(main)
