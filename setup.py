"""Packaging for tb-convfilters: a TensorBoard plugin that shows conv filters."""

import shutil
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py


class CleanBuildPy(build_py):
    """Copies the package into an emptied build folder: setuptools reuses ``build/lib`` and
    never removes a file from it, so a module moved or deleted in the sources would ship
    again from an earlier build."""

    def run(self):
        shutil.rmtree(Path(self.build_lib) / "tb_convfilters", ignore_errors=True)
        super().run()


setup(
    cmdclass={"build_py": CleanBuildPy},
    name="tb-convfilters",
    version="0.1.0",
    description="TensorBoard plugin: see convolution filters and activations as they train",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=[
        *find_packages(include=["tb_convfilters", "tb_convfilters.*"]),
        "tb_convfilters.frontend",
    ],
    package_dir={"tb_convfilters.frontend": "frontend"},
    package_data={
        "tb_convfilters.frontend": ["*.md", "static/**/*"],
    },
    install_requires=[
        "tensorboard>=2.12",
        "numpy>=1.23",
        "crc32c>=2.3",
        "werkzeug>=2.0",
        "tqdm",
        "ml_dtypes",
        "scipy>=1.4",  # compare: linear_sum_assignment(maximize=True)
    ],
    extras_require={
        "tf": ["tensorflow>=2.13"],
        "torch": ["torch"],
        "lightning": ["lightning>=2.0"],
        "transformers": ["transformers>=4.40", "accelerate>=0.26"],  # the Trainer needs accelerate
        "fastai": ["fastai>=2.7"],
        "ultralytics": ["ultralytics>=8.1"],
        "flax": ["flax>=0.10"],
        "tensorboardx": ["tensorboardX>=2.6"],
        "plot": ["matplotlib>=3.7"],
        "fast": ["numba>=0.59"],  # the Writer's stats in one compiled pass (fused.py)
        "onnx": ["onnx", "onnxruntime"],  # tb-convfilters import of .onnx files (and activations)
        # tb-convfilters animate / plot.animate: GIF (Pillow, with matplotlib), MP4 and WebM
        "video": ["matplotlib>=3.7", "imageio>=2.9", "imageio-ffmpeg>=0.4"],
        "test": [
            "pytest",
            "playwright",
            "hypothesis",
            "moto[server]",
            "boto3",
            "build",
            "mkdocs>=1.6",
            "mkdocs-material",
            "ipython",  # the %tensorboard notebook magic in test_notebook
            "scikit-learn",  # benchmarks.dead_units and the compare example train on its digits
            "onnx",  # test_import: a hand-built ONNX model
            "onnxruntime",  # test_import_activations: an ONNX model run on sample inputs
            "safetensors",  # test_import: .safetensors saved by a PyTorch loop
            "imageio",  # test_animate: videos read back
            "imageio-ffmpeg",  # test_animate: MP4 and WebM written and read
        ],
    },
    entry_points={
        "tensorboard_plugins": ["convfilters = tb_convfilters.plugin:ConvFiltersLoader"],
        "console_scripts": ["tb-convfilters = tb_convfilters.cli:main"],
    },
    classifiers=[
        "Framework :: TensorFlow",
        "Intended Audience :: Science/Research",
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Visualization",
    ],
)
