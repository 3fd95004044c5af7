"""suite/plumbing/flags.py: every numeric flag of every script is checked when
parsed, in one line naming it."""
import pytest

import Evaluation
import FlowIO
import train
import useModel


@pytest.mark.parametrize("parse,argv,flag", [
    (train.parse_args, ["--epochs", "nan"], "--epochs"),
    (train.parse_args, ["--epochs", "inf"], "--epochs"),
    (train.parse_args, ["--epochs", "1e300"], "--epochs"),
    (train.parse_args, ["--eval_every_epochs", "1e300"], "--eval_every_epochs"),
    (train.parse_args, ["--warmup_epochs", "nan"], "--warmup_epochs"),
    (train.parse_args, ["--log_every_steps", "0"], "--log_every_steps"),
    (train.parse_args, ["--batch_size", "-1"], "--batch_size"),
    (train.parse_args, ["--image_size", "8"], "--image_size"),
    (train.parse_args, ["--image_size", "100000"], "--image_size"),
    (train.parse_args, ["--momentum", "1.5"], "--momentum"),
    (train.parse_args, ["--label_smoothing", "-0.1"], "--label_smoothing"),
    (train.parse_args, ["--save_every_secs", "0"], "--save_every_secs"),
    (train.parse_args, ["--seed", "-3"], "--seed"),
    (FlowIO.parse_args, ["--num_shards", "-2"], "--num_shards"),
    (FlowIO.parse_args, ["--max_side", "-5"], "--max_side"),
    (FlowIO.parse_args, ["--validation_ratio", "1"], "--validation_ratio"),
    (FlowIO.parse_args, ["--workers", "0"], "--workers"),
    (Evaluation.parse_args, ["--batch_size", "0"], "--batch_size"),
    (useModel.parse_args, ["a.jpg", "--batch_size", "-1"], "--batch_size"),
    (useModel.parse_args, ["a.jpg", "--threshold", "2"], "--threshold"),
    (useModel.parse_args, ["a.jpg", "--top_k", "0"], "--top_k"),
])
def test_every_numeric_flag_is_checked_when_parsed(parse, argv, flag, capsys):
    with pytest.raises(SystemExit) as exit_:
        parse(argv)
    assert exit_.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and flag in lines[0], lines


def test_valid_numbers_still_parse():
    args = train.parse_args(["--epochs", "0.5", "--warmup_epochs", "0", "--seed", "0",
                             "--image_size", "64", "--momentum", "0"])
    assert (args.epochs, args.warmup_epochs, args.seed, args.image_size) == (0.5, 0, 0, 64)
