from setuptools import setup

# the documentation site (mkdocs.yml; `make docs`, and `make test` builds it strictly)
DOCS = ["mkdocs>=1.6", "mkdocs-material>=9.5", "mkdocstrings[python]>=0.26",
        "mkdocstrings-python>=1.10", "mkdocs-jupyter>=0.25"]

setup(
    name="ppl-ssvae",
    version="0.1.0",
    description="Semi-supervised variational autoencoders (Kingma et al. M2 and kin) in Pyro",
    python_requires=">=3.10",
    packages=["ppl_ssvae", "ppl_ssvae.data", "ppl_ssvae.models", "ppl_ssvae.guides"],
    package_dir={
        "ppl_ssvae": "ppl_ssvae",
        "ppl_ssvae.models": "models",
        "ppl_ssvae.guides": "guides",
    },
    install_requires=[
        "torch>=2.2",
        "pyro-ppl>=1.9",
        "numpy>=1.24",
        "matplotlib>=3.7",
        "tqdm>=4.60",
    ],
    extras_require={"sklearn": ["scikit-learn>=1.3"], "docs": DOCS, "dev": DOCS + [
        "pytest>=7", "ruff>=0.5",
        # the estimator's tests and experiments/digits.py (the `sklearn` extra)
        "scikit-learn>=1.3",
        # render tests (and the Debian package graphviz, which .ci/run installs)
        "graphviz>=0.20",
        # the tutorial: jupytext keeps the .ipynb in sync with its .py; nbclient and
        # ipykernel execute it (make tutorial)
        "jupytext>=1.16", "nbformat>=5.9", "nbclient>=0.10", "ipykernel>=6.29",
    ]},
    entry_points={"console_scripts": ["ppl-ssvae=ppl_ssvae.cli:main"]},
)
