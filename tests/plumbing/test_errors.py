"""suite/plumbing/errors.py: the reason of an error is its cause, not
TensorFlow's noise."""
import tensorflow as tf

from suite.plumbing import errors


def test_the_reason_of_a_tensorflow_save_error_is_its_cause():
    message = ("Graph execution error:\n\nDetected at node 'save/SaveV2' defined at:\n"
               "    File \"train.py\", line 6\nNode: 'save/SaveV2'\n"
               "/m/model.ckpt-5.data-00000-of-00001.tempstate1; No space left on device\n"
               "\t [[{{node save/SaveV2}}]]")
    error = tf.errors.ResourceExhaustedError(None, None, message)
    assert errors.reason(error) == "No space left on device"
    assert errors.reason(OSError(30, "Read-only file system")) == "Read-only file system"
