"""napari-tpm: few-shot 3D medical image segmentation with the Tied Prototype Model.

Paint one slice of a CT or MR volume, and the Tied Prototype Model (Kim, Hansen and
Kampffmeyer, MICCAI 2025) segments that structure through the whole volume.

This module stays import-light on purpose: napari imports the package to find the manifest,
so torch and Qt are only imported by the submodules that need them.
"""

__version__ = "0.1.0"
