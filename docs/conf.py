"""Sphinx configuration of the mtl_jax documentation site.

Sphinx with MyST and myst-nb and the book theme, as optax, flax and jax use:
the guide pages stay markdown that reads on GitHub as it does on the site,
autodoc and napoleon read the Google-style docstrings, and MathJax renders
their ``:math:`` roles (in the reader's browser: the build needs no network).

Build (the same command runs in CI, warnings are errors):

  pip install ".[docs]" && sphinx-build -W --keep-going -b html docs docs/_build/html
"""
import inspect
import os
import re
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)  # document this checkout, not an installed copy

import mtl_jax  # noqa: E402

project = "mtl_jax"
author = "the mtl_jax authors"
copyright = "the mtl_jax authors"
release = version = mtl_jax.__version__

extensions = [
    "myst_nb",  # markdown pages and notebooks (brings myst_parser)
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.napoleon",
]

exclude_patterns = ["_build", "**.ipynb_checkpoints"]
templates_path = ["_templates"]

# -- Pages ---------------------------------------------------------------------

# Links such as results/README.md's ``../experiments.md#the-protocol`` name a
# heading by its GitHub anchor.
myst_heading_anchors = 4

# $$ ... $$ in the notebook's markdown cells.
myst_enable_extensions = ["dollarmath"]

# Notebooks are shown with the outputs stored in them; CI executes the
# quickstart separately (tests/test_notebook.py).
nb_execution_mode = "off"

# The notebooks live in ../notebooks (where Colab and the tests find them);
# Sphinx reads sources only below docs/, so each build copies them into
# docs/notebooks/ (git-ignored). A plain copy works in a fresh clone and on
# any OS, unlike a symlink.
_NOTEBOOKS = os.path.join(HERE, "notebooks")
os.makedirs(_NOTEBOOKS, exist_ok=True)
for _name in sorted(os.listdir(os.path.join(ROOT, "notebooks"))):
  if _name.endswith(".ipynb"):
    shutil.copy2(os.path.join(ROOT, "notebooks", _name),
                 os.path.join(_NOTEBOOKS, _name))

# -- The generated results pages -------------------------------------------------

# experiments/compare.py and experiments/temperature_sweep.py write
# results/<benchmark>/{results,temperature_sweep}.md, which start at "##" so
# that they read as a section wherever they are pasted, and leave the plots as
# files beside them. The site shows them unchanged but one heading level up
# (a page needs a title) and with the plots of their folder appended.
_PLOTS = {
    "results": (("weights.png", "Task weights over training, every method"),
                ("uw_inertia.png", "UW against UW-O against UW-SO"),
                ("validation.png", "Validation curves")),
    "temperature_sweep": (("temperature_sweep.png", "Δm against T"),),
}
_GENERATED = re.compile(r"results/[^/]+/(results|temperature_sweep)")


def _generated_page(app, docname, source):
  match = _GENERATED.fullmatch(docname)
  if not match:
    return
  text = re.sub(r"^#(#+) ", r"\1 ", source[0], flags=re.M)
  folder = os.path.join(app.srcdir, os.path.dirname(docname))
  plots = [(f, caption) for f, caption in _PLOTS[match.group(1)]
           if os.path.exists(os.path.join(folder, f))]
  if plots:
    text += "\n\n## Plots\n"
    for name, caption in plots:
      text += f"\n{caption}:\n\n![{caption}]({name})\n"
  source[0] = text


# -- API reference -----------------------------------------------------------------

# api.md lists the package once; autosummary walks the modules named in each
# package's __all__ (templates in _templates/autosummary/) and documents the
# names in each module's __all__.
autosummary_generate = True
autosummary_ignore_module_all = False
autosummary_imported_members = False
autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "description"
autodoc_typehints_format = "short"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
# "Attributes:" sections become a field list of the class, not separate
# attribute entries that would repeat the dataclass and NamedTuple fields.
napoleon_use_ivar = True


def _public_modules(module):
  """``module`` and, depth first, the modules in each package's __all__."""
  yield module
  for name in getattr(module, "__all__", ()):
    child = getattr(module, name)
    if inspect.ismodule(child) and child.__name__.startswith(module.__name__):
      yield from _public_modules(child)


def _aliases(package):
  """Full names of classes that an earlier page already documents.

  A class exported by two modules (``StatelessState`` by
  ``mtl_jax.weighting`` and ``mtl_jax.aggregation``) would be registered twice
  under its canonical name; its second entry is written with ``:no-index:``.
  """
  seen, aliases = set(), set()
  for module in _public_modules(package):
    for name in getattr(module, "__all__", ()):
      obj = getattr(module, name)
      if inspect.isclass(obj):
        if id(obj) in seen:
          aliases.add(f"{module.__name__}.{name}")
        seen.add(id(obj))
  return aliases


autosummary_context = {"aliases": _aliases(mtl_jax)}


def _skip_member(app, what, name, obj, skip, options):
  # NamedTuple fields are documented as "Alias for field number N"; the
  # class signature and docstring already name each of them.
  if (getattr(obj, "__doc__", None) or "").startswith("Alias for field number"):
    return True
  return None

# -- HTML ------------------------------------------------------------------------

html_theme = "sphinx_book_theme"
html_title = "mtl_jax"
html_theme_options = {"show_toc_level": 2}


def setup(app):
  app.connect("source-read", _generated_page)
  app.connect("autodoc-skip-member", _skip_member)
