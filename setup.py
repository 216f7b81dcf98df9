"""Installs the ``chimeraseg`` package from ``projects/ChimeraSeg``.

detectron2 is deliberately not listed: it is not published on package registries. Install it from
its upstream source (INSTALL.md); only ``chimeraseg.d2`` and the tools that use it import it. The
runtime packages are read from ``requirements/runtime.txt`` (their one home), each as "at least the
tested version", so that an installed CUDA build of torch is kept.
"""

from pathlib import Path

from setuptools import find_packages, setup

PACKAGE_ROOT = "projects/ChimeraSeg"
RUNTIME_REQUIREMENTS = Path(__file__).parent / "requirements" / "runtime.txt"
# Not in requirements/runtime.txt, so that installing it never replaces your CUDA torch.
TORCH_REQUIREMENTS = ["torch>=2.1", "torchvision>=0.16"]


def read_version() -> str:
    """Reads ``__version__`` from the package without importing it (torch may be absent)."""
    init = Path(__file__).parent / PACKAGE_ROOT / "chimeraseg" / "__init__.py"
    for line in init.read_text().splitlines():
        if line.startswith("__version__"):
            return line.split("=")[1].strip().strip('"')
    raise RuntimeError(f"__version__ not found in {init}")


def read_runtime_requirements() -> list[str]:
    """``name>=version`` for every ``name==version`` pin of ``requirements/runtime.txt``."""
    requirements = []
    for line in RUNTIME_REQUIREMENTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            if not sep:
                raise RuntimeError(f"{RUNTIME_REQUIREMENTS}: '{line}' is not a 'name==version' pin")
            requirements.append(f"{name.strip()}>={version.strip()}")
    return requirements


setup(
    name="chimeraseg",
    version=read_version(),
    description="Chimera-Seg: zero-shot semantic segmentation with a partial-CLIP semantic head",
    long_description=(Path(__file__).parent / "README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    package_dir={"": PACKAGE_ROOT},
    packages=find_packages(PACKAGE_ROOT),
    # Class tables of the large vocabularies (PASCAL Context-459, ADE20K-847).
    package_data={"chimeraseg.data": ["class_names/*.txt", "class_names/*.tsv"]},
    install_requires=TORCH_REQUIREMENTS + read_runtime_requirements(),
    extras_require={"dev": ["pytest>=7.4", "ruff>=0.5"]},
)
