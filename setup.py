"""Installs the ``chimeraseg`` package from ``projects/ChimeraSeg``.

detectron2 is deliberately not listed: it is not published on package registries. Install it from
its upstream source (see README.md); only ``chimeraseg.d2`` and the tools that use it import it.
"""

from pathlib import Path

from setuptools import find_packages, setup

PACKAGE_ROOT = "projects/ChimeraSeg"


def read_version() -> str:
    """Reads ``__version__`` from the package without importing it (torch may be absent)."""
    init = Path(__file__).parent / PACKAGE_ROOT / "chimeraseg" / "__init__.py"
    for line in init.read_text().splitlines():
        if line.startswith("__version__"):
            return line.split("=")[1].strip().strip('"')
    raise RuntimeError(f"__version__ not found in {init}")


setup(
    name="chimeraseg",
    version=read_version(),
    description="Chimera-Seg: zero-shot semantic segmentation with a partial-CLIP semantic head",
    long_description=(Path(__file__).parent / "README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    package_dir={"": PACKAGE_ROOT},
    packages=find_packages(PACKAGE_ROOT),
    # Class tables of the large vocabularies (PASCAL Context-459, ADE20K-847).
    package_data={"chimeraseg.data": ["class_names/*.txt", "class_names/*.tsv"]},
    install_requires=[
        "torch>=2.1",
        "torchvision>=0.16",
        "fvcore>=0.1.5",
        "open_clip_torch>=2.23",
        "pycocotools>=2.0.6",
        "opencv-python-headless>=4.8",
        "numpy>=1.23",
        "tqdm>=4.64",
        "matplotlib>=3.6",
        "safetensors>=0.4",
    ],
    extras_require={"dev": ["pytest>=7.4", "ruff>=0.5"]},
)
