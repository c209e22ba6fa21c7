"""The ROS-free pipeline: configuration, model loading, text, dense CLIP methods, preprocessing, the segmenter,
PAMR, overlays and CPU kernels. Imports nothing of zeroseg_ros outside ``core``."""
