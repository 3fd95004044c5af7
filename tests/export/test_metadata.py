"""suite/export/metadata.py: what a pixel model carries about itself reads back
as written, and nothing else is taken for it."""
import json

import pytest

from suite.export import metadata
from suite.images.eval_transform import eval_shorter_side


@pytest.mark.parametrize("image_size,max_side", [(32, None), (224, 640)])
def test_metadata_reads_back_as_written(image_size, max_side):
    contract = metadata.pixel_contract(image_size, (1.0, 2.0, 3.0), (4.0, 5.0, 6.0), max_side)
    written = metadata.model_metadata(["café", "dog"], contract, "best/model.ckpt-9")
    assert all(isinstance(value, str) for value in written.values())  # ONNX props are strings
    assert metadata.read_metadata(written, image_size, 2) == (
        ["café", "dog"], max_side, "best/model.ckpt-9")
    contract = json.loads(written[metadata.PIXEL_CONTRACT])
    assert contract["resize_shorter_side_to"] == eval_shorter_side(image_size)
    assert contract["normalization"]["std_rgb"] == [4.0, 5.0, 6.0]
    # Read against another model's input side or number of outputs: refused.
    with pytest.raises(metadata.OddMetadata, match="pixel_contract does not describe"):
        metadata.read_metadata(written, image_size + 1, 2)
    with pytest.raises(metadata.OddMetadata, match="labels has 2 class names, the model 3"):
        metadata.read_metadata(written, image_size, 3)


def test_a_model_without_our_metadata_reads_as_carrying_nothing():
    assert metadata.read_metadata({}, 32, 5) == (None, None, None)
    assert metadata.read_metadata({"producer": "another tool"}, 32, 5) == (None, None, None)
