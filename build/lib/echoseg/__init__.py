"""echoseg: left-ventricle segmentation of echocardiography video, from training to the edge."""

__version__ = "0.1.0"
