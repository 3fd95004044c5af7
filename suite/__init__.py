"""The library behind the five scripts at the top of the repository, by concern.

    plumbing/       what every script shares: TensorFlow's environment, flags,
                    one-line errors, the one atomic write and lock, progress,
                    names in messages, the resumable download
    images/         one image file -> the stored JPEG and the network's pixels,
                    without TensorFlow (the ONNX client uses it too)
    data/           the data contract (labels.txt, shards, dataset.json), the
                    conversion FlowIO.py runs, and the input pipeline
    preprocessing/  pixels in the graph: normalisation, the evaluation
                    transform, augmentation (crop and flip, random erasing,
                    mixup and CutMix)
    hardware/       the precision that is fastest here, and memory
    model/          the model directory: model.json, the network rebuilt from
                    it, checkpoints, best/ and validation.json
    training/       the run's settings, the training step, the graph, the
                    session and the loop; several devices or machines; faster
                    CPU gradients; TF-slim's ImageNet weights
    evaluation/     metrics, reports, --watch
    prediction/     the Classifier API and the form of its answers
    export/         SavedModel, TFLite and ONNX exports

The network itself is resnet.py, at the top: the design's network file, which
imports nothing of this package. Scripts import the library; the library never
imports a script.
"""
