"""What the model learned and where the data is wrong: the label audit of
the training images, Grad-CAM heat maps, the training curves and the
report page; their pictures drawn with matplotlib."""
