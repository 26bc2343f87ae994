r"""QM9: the 11-target molecular benchmark of the gradient-balancing papers.

The data of Nash-MTL, FAMO and FairGrad (PyTorch Geometric's ``QM9`` with
the ``Complete`` and ``Distance(norm=False)`` transforms), built offline from
the CSV files of the PyPI package ``qm9pack`` (``pip install ".[qm9]"``).
Molecules have up to :data:`MAX_ATOMS` = 29 atoms (H, C, N, O, F) and are
stored padded. Every target is stored and yielded in the unit in which the
papers report its MAE (:data:`UNITS`):

============ =============================================== ===========
target       definition (qm9pack column)                     unit
============ =============================================== ===========
mu           dipole moment (Dipole_debye)                    D
alpha        isotropic polarizability (Polarizability_bohr3) a0^3
homo, lumo   orbital energies (HOMO_au, LUMO_au)             meV
r2           electronic spatial extent (R2_bohr2)            a0^2
zpve         zero-point vibrational energy (ZPVE_au)         meV
u0, u, h, g  atomization energies: U0, U(298 K), H(298 K),   meV
             G(298 K) minus the sum of :data:`ATOMREF` over
             the molecule's atoms
cv           heat capacity (Heatcapacity_Cv_cal_mol_K)       cal/mol K
============ =============================================== ===========

Hartree become meV through :data:`HARTREE_TO_EV` x 1000; methane's
:math:`U_0^{atom}` is -17.1722 eV = -17172.2 meV.

Per molecule the graph is:

* atoms: 11 features (one-hot H, C, N, O, F; atomic number; aromatic;
  one-hot sp, sp2, sp3; number of bonded hydrogens), in the CSV's atom order;
* pairs: 5 features (one-hot single, double, triple, aromatic bond, zero
  between unbonded atoms; the distance in Å). ``edges="complete"`` (the
  papers') puts every ordered pair of distinct atoms in the edge set,
  ``edges="bonded"`` only bonded pairs, both directions.

Bonds, aromaticity and hybridisation are *perceived* from the geometry, a
separate step (:func:`perceive_rdkit`, or a recorded table for tests,
:func:`perception_from_table`): rdkit's ``rdDetermineBonds.DetermineBonds``
(charge 0) on the atoms in the CSV's order, then sanitisation. Where the
default connect-the-dots connectivity fails (mostly strained bicyclic
molecules, whose bridgeheads lie under 2 Å apart), the van der Waals
connectivity with covalent radii x 1.2, then x 1.1, is tried; a molecule on
which all fail keeps the x 1.2 connectivity as single bonds, not aromatic,
hybridisation unset (:data:`PERCEPTION_STRATEGIES`; docs/datasets.md counts
each). PyG reads MoleculeNet's SDF bonds instead, without sanitising: see
docs/datasets.md for every difference.

The whole set (:data:`NUM_MOLECULES`) is stored once, in QM9 ``Index``
order, by a TFDS builder into array_record (4.3 min on two cores, once), read
once per process and served from memory. The split is drawn at load time
(:func:`split_indices`: a permutation of the seed; test the first 10,000,
validation the next 10,000, train the rest) and targets are standardised with
the mean and std over all molecules (:func:`statistics`), as the official
code does.

Example::

  from mtl_jax.data import qm9
  ds = qm9.load("train", batch_size=120)
  batch = next(iter(ds))
  # nodes (120, 29, 11), node_mask (120, 29), edges (120, 29, 29, 5),
  # edge_mask (120, 29, 29), targets (120, 11) standardised, index (120,)

Verification on the real data: ``python -m mtl_jax.data.qm9 verify``.

Reference: R. Ramakrishnan, P. Dral, M. Rupp, O. A. von Lilienfeld, "Quantum
chemistry structures and properties of 134 kilo molecules", Scientific Data
1, 140022 (2014), https://doi.org/10.1038/sdata.2014.22; A. Navon et al.,
"Multi-Task Learning as a Bargaining Game", ICML 2022,
https://arxiv.org/abs/2202.01017.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import hashlib
import importlib.util
import json
import os
import pathlib
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import grain
import numpy as np
import tensorflow_datasets as tfds

from mtl_jax.data import _builder, _pipeline

# ------------------------------------------------------------------ constants

TARGETS = ("mu", "alpha", "homo", "lumo", "r2", "zpve", "u0", "u", "h", "g", "cv")
NUM_TASKS = len(TARGETS)
# The unit of each target as stored, yielded and reported (the papers' MAEs).
UNITS = {"mu": "D", "alpha": "a0^3", "homo": "meV", "lumo": "meV", "r2": "a0^2",
         "zpve": "meV", "u0": "meV", "u": "meV", "h": "meV", "g": "meV", "cv": "cal/mol K"}
LOSSES = dict.fromkeys(TARGETS, "mse")
MAX_ATOMS = 29
NODE_FEATURES = 11
EDGE_FEATURES = 5
ELEMENTS = ("H", "C", "N", "O", "F")
ATOMIC_NUMBERS = {"H": 1, "C": 6, "N": 7, "O": 8, "F": 9}
HARTREE_TO_EV = 27.211386246
# QM9's atomic reference energies (Hartree), per energy target and element.
ATOMREF = {
    "u0": {"H": -0.500273, "C": -37.846772, "N": -54.583861, "O": -75.064579, "F": -99.718730},
    "u": {"H": -0.498857, "C": -37.845355, "N": -54.582445, "O": -75.063163, "F": -99.717314},
    "h": {"H": -0.497912, "C": -37.844411, "N": -54.581501, "O": -75.062219, "F": -99.716370},
    "g": {"H": -0.510927, "C": -37.861317, "N": -54.598897, "O": -75.079532, "F": -99.733544},
}
NUM_MOLECULES = 130831
NUM_INDICES = 133885  # QM9's Index runs 1..133885; 3,054 molecules are left out
# H - U at 298.15 K for an ideal gas: RT = k_B T = 0.00094418 Hartree. The CSV's
# energies have 6 decimals, so their difference reads 0.000944 or 0.000945.
RT_HARTREE = 0.000944
_RT_TOLERANCE = 1e-6 + 1e-9  # the last decimal of the CSV, and float error

# The qm9pack columns of the raw values (Hartree for the energies).
_COLUMNS = {"mu": "Dipole_debye", "alpha": "Polarizability_bohr3", "homo": "HOMO_au",
            "lumo": "LUMO_au", "r2": "R2_bohr2", "zpve": "ZPVE_au",
            "u0": "InternalEnergy_0K_au", "u": "InternalEnergy_298K_au",
            "h": "Enthalphy_298K_au", "g": "GibbsFreeEnergy_298K_au",
            "cv": "Heatcapacity_Cv_cal_mol_K"}
_HARTREE_TARGETS = ("homo", "lumo", "zpve", "u0", "u", "h", "g")
CSV_PATTERN = "qm9_part*.csv"

# The published single-task MAEs (Nash-MTL's STL row, unrounded), the BASE of Delta_m.
STL_BASELINES = dict(zip(TARGETS, (0.0671, 0.1814, 60.576, 53.915, 0.5027, 4.539, 58.838,
                                   64.244, 63.852, 66.223, 0.07212)))
# Published test MAEs (units of UNITS) and Delta_m (%): Nash-MTL Table 1 and its
# appendix, FAMO Table 2, FairGrad and GO4Align as restated in NTKMTL's appendix.
_PUBLISHED_ROWS = {
    "stl": ((.067, .181, 60.57, 53.91, .502, 4.53, 58.8, 64.2, 63.8, 66.2, .072), 0.0),
    "ew": ((.106, .325, 73.57, 89.67, 5.19, 14.06, 143.4, 144.2, 144.6, 140.3, .128), 177.6),
    "uw_o": ((.309, .345, 149.8, 135.7, 1.00, 4.50, 55.3, 55.75, 55.82, 55.27, .112), 77.8),
    "rlw": ((.113, .340, 76.95, 92.76, 5.86, 15.46, 156.3, 157.1, 157.6, 153.0, .137), 203.8),
    "dwa": ((.107, .325, 74.06, 90.61, 5.09, 13.99, 142.3, 143.0, 143.4, 139.3, .125), 175.3),
    "uw": ((.386, .425, 166.2, 155.8, 1.06, 4.99, 66.4, 66.78, 66.80, 66.24, .122), 108.0),
    "mgda": ((.217, .368, 126.8, 104.6, 3.22, 5.69, 88.37, 89.4, 89.32, 88.01, .120), 120.5),
    "pcgrad": ((.106, .293, 75.85, 88.33, 3.94, 9.15, 116.36, 116.8, 117.2, 114.5, .110),
               125.7),
    "cagrad": ((.118, .321, 83.51, 94.81, 3.21, 6.93, 113.99, 114.3, 114.5, 112.3, .116),
               112.8),
    "imtl_g": ((.136, .287, 98.31, 93.96, 1.75, 5.69, 101.4, 102.4, 102.0, 100.1, .096), 77.2),
    "nash_mtl": ((.102, .248, 82.95, 81.89, 2.42, 5.38, 74.5, 75.02, 75.10, 74.16, .093), 62.0),
    "famo": ((.15, .30, 94.0, 95.2, 1.63, 4.95, 70.82, 71.2, 71.2, 70.3, .10), 58.5),
    "fairgrad": ((.117, .253, 87.57, 84.00, 2.15, 5.07, 70.89, 71.17, 71.21, 70.88, .095), 57.9),
    "go4align": ((.17, .35, 102.4, 119.0, 1.22, 4.94, 53.9, 54.3, 54.3, 53.9, .11), 52.7),
}
PUBLISHED: dict[str, dict[str, float]] = {
    m: {**dict(zip(TARGETS, maes)), "delta_m": dm} for m, (maes, dm) in _PUBLISHED_ROWS.items()}
# Standard errors of Delta_m over 3 seeds, where the papers give them.
PUBLISHED_DELTA_M_SE = {"ew": 3.4, "uw_o": 9.2, "rlw": 3.4, "dwa": 6.3, "uw": 22.5,
                        "mgda": 2.0, "pcgrad": 10.3, "cagrad": 4.0, "imtl_g": 9.3,
                        "nash_mtl": 1.4}
# The papers' names of the methods in PUBLISHED.
PUBLISHED_NAMES = {"stl": "STL", "ew": "LS", "uw_o": "SI", "rlw": "RLW", "dwa": "DWA",
                   "uw": "UW", "mgda": "MGDA", "pcgrad": "PCGrad", "cagrad": "CAGrad",
                   "imtl_g": "IMTL-G", "nash_mtl": "Nash-MTL", "famo": "FAMO",
                   "fairgrad": "FairGrad", "go4align": "GO4Align"}

SPLITS = ("train", "validation", "test")
EDGE_SETS = ("complete", "bonded")
_STORED_SPLIT = "full"  # one stored split: every molecule, in Index order
_INSTALL_HINT = 'pip install ".[qm9]"'

# ------------------------------------------------------------------ raw records


@dataclasses.dataclass(frozen=True)
class Record:
  """One molecule of the CSVs: Index, SMILES, atoms, positions (Å), raw values.

  ``values`` maps each target name to the CSV's raw number (energies in
  Hartree, before the atomization is taken).
  """
  index: int
  smiles: str
  elements: tuple[str, ...]
  positions: np.ndarray  # float64 (n, 3), Å
  values: Mapping[str, float]

  @property
  def n_atoms(self) -> int:
    return len(self.elements)


def parse_row(row: Mapping[str, str]) -> Record:
  """A :class:`Record` from one CSV row (a ``csv.DictReader`` dict of strings)."""
  elements = tuple(e.strip().strip("'\"") for e in row["Elements"].strip("[]").split(","))
  xyz = row["XYZ_Ang"].strip()[2:-2].split("],[")
  positions = np.array([[float(v) for v in atom.split(",")] for atom in xyz], np.float64)
  n = int(row["N_atoms"])
  if len(elements) != n or positions.shape != (n, 3):
    raise ValueError(f"Molecule {row['Index']}: N_atoms={n} but {len(elements)} elements and "
                     f"positions of shape {positions.shape}.")
  return Record(index=int(row["Index"]), smiles=row["SMILES"], elements=elements,
                positions=positions,
                values={t: float(row[c]) for t, c in _COLUMNS.items()})


def default_source_dir() -> pathlib.Path:
  """qm9pack's data folder (``<site-packages>/qm9pack/data``), found without importing it.

  Raises:
    ModuleNotFoundError: qm9pack is not installed.
  """
  try:
    spec = importlib.util.find_spec("qm9pack")
  except (ImportError, ValueError):  # ValueError: sys.modules["qm9pack"] is None
    spec = None
  if spec is None or not spec.submodule_search_locations:
    raise ModuleNotFoundError(
        f"QM9 is read from the PyPI package qm9pack, which is not installed: {_INSTALL_HINT} "
        "(or pass source_dir=<a folder with qm9_part*.csv>).")
  return pathlib.Path(next(iter(spec.submodule_search_locations))) / "data"


def csv_files(source_dir: str | os.PathLike | None = None) -> list[pathlib.Path]:
  """The CSV files of ``source_dir`` (default :func:`default_source_dir`), in order."""
  root = pathlib.Path(source_dir) if source_dir is not None else default_source_dir()
  files = sorted(root.glob(CSV_PATTERN))
  if not files:
    raise FileNotFoundError(f"No {CSV_PATTERN} in {root} (qm9pack's layout: {_INSTALL_HINT}).")
  return files


def read_records(source_dir: str | os.PathLike | None = None) -> Iterator[Record]:
  """Every molecule of the CSVs, in file order (qm9pack's: increasing Index)."""
  csv.field_size_limit(1 << 30)
  for path in csv_files(source_dir):
    with open(path, newline="") as f:
      for row in csv.DictReader(f):
        yield parse_row(row)


def targets_of(record: Record) -> np.ndarray:
  """The 11 targets of :data:`TARGETS` in the units of :data:`UNITS`, float64 (11,).

  Energies: Hartree x :data:`HARTREE_TO_EV` x 1000 (meV); ``u0``, ``u``,
  ``h``, ``g`` after subtracting :data:`ATOMREF` summed over the atoms.
  """
  out = []
  for t in TARGETS:
    v = record.values[t]
    if t in ATOMREF:
      v -= sum(ATOMREF[t][e] for e in record.elements)
    if t in _HARTREE_TARGETS:
      v *= HARTREE_TO_EV * 1000.0
    out.append(v)
  return np.array(out, np.float64)


# ------------------------------------------------------------------ perception

# How a molecule's bonds were found, in the order tried (stored per molecule).
PERCEPTION_STRATEGIES = ("geometry", "vdw_1.2", "vdw_1.1", "connectivity_only", "table")
_VDW = {"vdw_1.2": 1.2, "vdw_1.1": 1.1}


class Perception(NamedTuple):
  """Bonds and atom types of one molecule, atoms in the record's order.

  bonds: int8 (n, n), symmetric: 0 none, 1 single, 2 double, 3 triple, 4 aromatic.
  aromatic: bool (n,).
  hybridization: int8 (n,): 1 sp, 2 sp2, 3 sp3, 0 anything else (H, unset).
  strategy: the entry of :data:`PERCEPTION_STRATEGIES` that produced it.
  """
  bonds: np.ndarray
  aromatic: np.ndarray
  hybridization: np.ndarray
  strategy: str


Perceive = Callable[[Record], Perception]


def _rdkit():
  try:
    from rdkit import Chem, RDLogger
    from rdkit.Chem import rdDetermineBonds
  except ImportError as e:
    raise ModuleNotFoundError(
        f"Perceiving bonds from the QM9 geometries needs rdkit: {_INSTALL_HINT} "
        "(or pass perception_table=<a recorded table>).") from e
  RDLogger.DisableLog("rdApp.*")
  return Chem, rdDetermineBonds


def _rdkit_mol(record: Record) -> Any:
  Chem, _ = _rdkit()
  from rdkit.Geometry import Point3D
  mol = Chem.RWMol()
  for e in record.elements:
    mol.AddAtom(Chem.Atom(e))
  conf = Chem.Conformer(record.n_atoms)
  for i, p in enumerate(record.positions):
    conf.SetAtomPosition(i, Point3D(*map(float, p)))
  mol.AddConformer(conf, assignId=True)
  return mol


def _from_rdkit(mol: Any, strategy: str) -> Perception:
  Chem, _ = _rdkit()
  n = mol.GetNumAtoms()
  codes = {Chem.BondType.SINGLE: 1, Chem.BondType.DOUBLE: 2, Chem.BondType.TRIPLE: 3,
           Chem.BondType.AROMATIC: 4}
  hyb = {Chem.HybridizationType.SP: 1, Chem.HybridizationType.SP2: 2,
         Chem.HybridizationType.SP3: 3}
  bonds = np.zeros((n, n), np.int8)
  for b in mol.GetBonds():
    i, j = b.GetBeginAtomIdx(), b.GetEndAtomIdx()
    bonds[i, j] = bonds[j, i] = codes.get(b.GetBondType(), 1)
  aromatic = np.array([a.GetIsAromatic() for a in mol.GetAtoms()], bool)
  hybridization = np.array([hyb.get(a.GetHybridization(), 0) for a in mol.GetAtoms()], np.int8)
  return Perception(bonds, aromatic, hybridization, strategy)


def perceive_rdkit(record: Record) -> Perception:
  """Bonds, aromaticity and hybridisation from the geometry with rdkit.

  ``rdDetermineBonds.DetermineBonds(mol, charge=0)`` (connect-the-dots
  connectivity, then bond orders), then ``SanitizeMol`` (aromaticity,
  hybridisation). If that raises, the van der Waals connectivity with
  ``covFactor`` 1.2, then 1.1; if all raise, the 1.2 connectivity as single
  bonds, no aromaticity, hybridisation 0 ("connectivity_only").
  """
  Chem, rdDetermineBonds = _rdkit()
  for strategy in PERCEPTION_STRATEGIES[:3]:
    mol = _rdkit_mol(record)
    kwargs = {} if strategy == "geometry" else dict(useVdw=True, covFactor=_VDW[strategy])
    try:
      rdDetermineBonds.DetermineBonds(mol, charge=0, **kwargs)
      Chem.SanitizeMol(mol)
    except Exception:  # rdkit raises several unrelated types
      continue
    return _from_rdkit(mol, strategy)
  mol = _rdkit_mol(record)
  rdDetermineBonds.DetermineConnectivity(mol, useVdw=True, covFactor=_VDW["vdw_1.2"])
  p = _from_rdkit(mol, "connectivity_only")
  return p._replace(bonds=np.minimum(p.bonds, 1), aromatic=np.zeros_like(p.aromatic),
                    hybridization=np.zeros_like(p.hybridization))


def perception_to_json(p: Perception) -> dict[str, Any]:
  """One table entry: bonds as ``[i, j, type]`` with i < j, aromatic atoms, hybridisation."""
  i, j = np.nonzero(np.triu(p.bonds))
  return {"bonds": [[int(a), int(b), int(p.bonds[a, b])] for a, b in zip(i, j)],
          "aromatic": [int(a) for a in np.flatnonzero(p.aromatic)],
          "hybridization": [int(h) for h in p.hybridization],
          "strategy": p.strategy}


def perception_from_json(entry: Mapping[str, Any]) -> Perception:
  """Inverse of :func:`perception_to_json`."""
  n = len(entry["hybridization"])
  bonds = np.zeros((n, n), np.int8)
  for i, j, t in entry["bonds"]:
    bonds[i, j] = bonds[j, i] = t
  aromatic = np.zeros(n, bool)
  aromatic[list(entry["aromatic"])] = True
  return Perception(bonds, aromatic, np.array(entry["hybridization"], np.int8),
                    entry.get("strategy", "table"))


def write_perception_table(records: Iterable[Record], path: str | os.PathLike,
                           perceive: Perceive = perceive_rdkit) -> None:
  """Records ``perceive`` on ``records`` as JSON ``{Index: entry}`` (fixtures)."""
  table = {str(r.index): perception_to_json(perceive(r)) for r in records}
  pathlib.Path(path).write_text(json.dumps(table, indent=1) + "\n")


def perception_from_table(path: str | os.PathLike) -> Perceive:
  """A perceive function that looks molecules up by Index in a recorded table."""
  table = json.loads(pathlib.Path(path).read_text())

  def perceive(record: Record) -> Perception:
    if str(record.index) not in table:
      raise KeyError(f"Molecule {record.index} is not in the perception table {path}.")
    p = perception_from_json(table[str(record.index)])
    if len(p.hybridization) != record.n_atoms:
      raise ValueError(f"Molecule {record.index}: table has {len(p.hybridization)} atoms, "
                       f"the record {record.n_atoms}.")
    return p
  return perceive


def node_features(elements: Sequence[str], p: Perception) -> np.ndarray:
  """The 11 features of each atom, int8 (n, 11).

  One-hot H, C, N, O, F; atomic number; aromatic; one-hot sp, sp2, sp3; the
  number of bonded hydrogens (PyG's ``num_hs``: H neighbours in the bond graph).
  """
  n = len(elements)
  out = np.zeros((n, NODE_FEATURES), np.int8)
  kind = np.array([ELEMENTS.index(e) for e in elements])
  out[np.arange(n), kind] = 1
  out[:, 5] = [ATOMIC_NUMBERS[e] for e in elements]
  out[:, 6] = p.aromatic
  for k in (1, 2, 3):
    out[:, 6 + k] = p.hybridization == k
  is_h = kind == 0
  out[:, 10] = ((p.bonds > 0) & is_h[None, :]).sum(axis=1)
  return out


def encode(record: Record, p: Perception) -> dict[str, np.ndarray]:
  """The stored example of one molecule, padded to :data:`MAX_ATOMS`."""
  n = record.n_atoms
  if n > MAX_ATOMS:
    raise ValueError(f"Molecule {record.index} has {n} atoms > MAX_ATOMS={MAX_ATOMS}.")
  nodes = np.zeros((MAX_ATOMS, NODE_FEATURES), np.int8)
  nodes[:n] = node_features(record.elements, p)
  positions = np.zeros((MAX_ATOMS, 3), np.float32)
  positions[:n] = record.positions
  bonds = np.zeros((MAX_ATOMS, MAX_ATOMS), np.int8)
  bonds[:n, :n] = p.bonds
  return {"nodes": nodes, "positions": positions, "bonds": bonds,
          "n_atoms": np.int32(n), "targets": targets_of(record).astype(np.float32),
          "index": np.int32(record.index),
          "perception": np.int8(PERCEPTION_STRATEGIES.index(p.strategy))}


# ----------------------------------------------------------------- TFDS builder


@dataclasses.dataclass
class QM9Config(tfds.core.BuilderConfig):
  """Where the CSVs and the perception come from; the name encodes both.

  ``source_dir`` "" is qm9pack's data folder; ``perception_table`` "" is
  :func:`perceive_rdkit`, otherwise a JSON table of
  :func:`write_perception_table`.
  """
  source_dir: str = ""
  perception_table: str = ""


def make_config(source_dir: str | os.PathLike | None = None,
                perception_table: str | os.PathLike | None = None) -> QM9Config:
  """Returns the builder config: "qm9pack" for the default sources, else a hash."""
  src = str(pathlib.Path(source_dir).resolve()) if source_dir else ""
  table = str(pathlib.Path(perception_table).resolve()) if perception_table else ""
  if not src and not table:
    return QM9Config(name="qm9pack")
  digest = hashlib.sha1(f"{src}\n{table}".encode()).hexdigest()[:12]
  return QM9Config(name=f"custom_{digest}", source_dir=src, perception_table=table)


class QM9(_builder.LocalBuilder, skip_registration=True):
  """TFDS builder of the QM9 molecules (array_record, Index order, no TensorFlow)."""

  name = "qm9_graphs"
  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = [make_config()]  # noqa: RUF012 (the TFDS idiom)

  def _info(self) -> tfds.core.DatasetInfo:
    def t(shape, dtype):  # raw bytes, as digit_attributes
      return tfds.features.Tensor(shape=shape, dtype=dtype, encoding=tfds.features.Encoding.BYTES)

    return tfds.core.DatasetInfo(
        builder=self,
        description="QM9 molecules from qm9pack's CSVs, bonds perceived from the geometry "
        "(mtl_jax.data.qm9); targets in the units of qm9.UNITS.",
        features=tfds.features.FeaturesDict({
            "nodes": t((MAX_ATOMS, NODE_FEATURES), np.int8),
            "positions": t((MAX_ATOMS, 3), np.float32),
            "bonds": t((MAX_ATOMS, MAX_ATOMS), np.int8),
            "n_atoms": tfds.features.Scalar(dtype=np.int32),
            "targets": t((NUM_TASKS,), np.float32),
            "index": tfds.features.Scalar(dtype=np.int32),
            "perception": tfds.features.Scalar(dtype=np.int8),
        }),
        disable_shuffling=True,  # keep Index order
    )

  def _split_generators(self, dl_manager: Any) -> dict[str, Any]:
    del dl_manager
    return {_STORED_SPLIT: self._generate_examples()}

  def _generate_examples(self):
    cfg = self.builder_config
    source = cfg.source_dir or None
    perceive = (perception_from_table(cfg.perception_table) if cfg.perception_table
                else perceive_rdkit)
    for record in read_records(source):
      yield record.index, encode(record, perceive(record))


def generate(data_dir: str | os.PathLike | None = None,
             source_dir: str | os.PathLike | None = None,
             perception_table: str | os.PathLike | None = None) -> tfds.core.DatasetBuilder:
  """Builds (once) and returns the prepared builder.

  Args:
    data_dir: cache directory; default ``$MTL_JAX_DATA_DIR`` or ``~/.cache/mtl_jax``.
    source_dir: folder of ``qm9_part*.csv``; default qm9pack's.
    perception_table: recorded perception (JSON); default rdkit on the geometry.

  Returns:
    The ``tfds`` builder; files under ``data_dir/qm9_graphs/<config>/1.0.0``.
  """
  cfg = make_config(source_dir, perception_table)
  if cfg.name in QM9.builder_configs:
    cfg = cfg.name
  builder = QM9(data_dir=str(_pipeline.default_data_dir(data_dir)), config=cfg)
  if not builder.is_prepared():  # a built copy needs neither qm9pack nor rdkit
    if source_dir is None:
      default_source_dir()  # the clear error when qm9pack is missing
    builder.download_and_prepare(file_format="array_record")
  return builder


_Key = tuple[str, str, str]


def _key(data_dir, source_dir, perception_table) -> _Key:
  return (str(_pipeline.default_data_dir(data_dir)), str(source_dir or ""),
          str(perception_table or ""))


_NUMPY_COPY = "molecules.npz"


def _read_examples(builder: tfds.core.DatasetBuilder) -> dict[str, np.ndarray]:
  source = builder.as_data_source(split=_STORED_SPLIT)
  examples = source.__getitems__(range(len(source)))
  arrays = {k: np.stack([e[k] for e in examples]) for k in examples[0]}
  arrays["n_atoms"] = arrays["n_atoms"].astype(np.int32)
  arrays["index"] = arrays["index"].astype(np.int32)
  arrays["perception"] = arrays["perception"].astype(np.int8)
  return arrays


@functools.lru_cache(maxsize=4)
def _all_arrays(key: _Key) -> dict[str, np.ndarray]:
  """Every stored molecule as stacked arrays, Index order (read once per process).

  Decoding the array_record files example by example takes about 30 s for
  the 130,831 molecules on two cores; the first read therefore leaves a numpy
  copy (``molecules.npz``, uncompressed, about 200 MB) next to them, which
  later processes load in about a second.
  """
  data_dir, source_dir, table = key
  builder = generate(data_dir, source_dir or None, table or None)
  path = pathlib.Path(builder.data_dir) / _NUMPY_COPY
  if path.exists():
    with np.load(path) as f:
      arrays = {k: f[k] for k in f.files}
  else:
    arrays = _read_examples(builder)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)  # atomic: concurrent readers see a whole file or none
  for a in arrays.values():
    a.setflags(write=False)
  return arrays


def molecules(data_dir: str | os.PathLike | None = None,
              source_dir: str | os.PathLike | None = None,
              perception_table: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
  """Every stored molecule, in Index order, built if missing (read-only arrays).

  Returns:
    ``nodes`` int8 (M, 29, 11), ``positions`` float32 (M, 29, 3) Å, ``bonds``
    int8 (M, 29, 29), ``n_atoms`` int32 (M,), ``targets`` float32 (M, 11) in
    :data:`UNITS` (not standardised), ``index`` int32 (M,) (QM9's Index) and
    ``perception`` int8 (M,) (the position in :data:`PERCEPTION_STRATEGIES`).
  """
  return _all_arrays(_key(data_dir, source_dir, perception_table))


@functools.lru_cache(maxsize=4)
def _statistics(key: _Key) -> tuple[np.ndarray, np.ndarray]:
  y = _all_arrays(key)["targets"].astype(np.float64)
  return y.mean(axis=0), y.std(axis=0, ddof=1)


def statistics(data_dir: str | os.PathLike | None = None,
               source_dir: str | os.PathLike | None = None,
               perception_table: str | os.PathLike | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
  """Mean and std (ddof=1, as ``torch.std``) of the 11 targets over ALL molecules.

  The official code standardises with these (not the train split's). Units:
  :data:`UNITS`. Returns float64 arrays (11,) (copies).
  """
  mean, std = _statistics(_key(data_dir, source_dir, perception_table))
  return mean.copy(), std.copy()


def split_indices(num_molecules: int, seed: int = 0, num_test: int = 10000,
                  num_validation: int = 10000) -> dict[str, np.ndarray]:
  """Positions (in Index order) of each split: a seeded permutation, then cut.

  test = the first ``num_test`` of ``np.random.default_rng(seed).permutation``,
  validation the next ``num_validation``, train the rest (PyG's recipe; its
  permutation comes from torch's generator, so the molecules differ).
  """
  if num_test < 0 or num_validation < 0 or num_test + num_validation > num_molecules:
    raise ValueError(f"Need 0 <= num_test, num_validation and num_test + num_validation <= "
                     f"{num_molecules}, got {num_test}, {num_validation}.")
  perm = np.random.default_rng(seed).permutation(num_molecules)
  cut = num_test + num_validation
  return {"train": perm[cut:], "validation": perm[num_test:cut], "test": perm[:num_test]}


# ------------------------------------------------------------------ serving

_OFF_DIAGONAL = 1.0 - np.eye(MAX_ATOMS, dtype=np.float32)


def graph_batch(batch: Mapping[str, np.ndarray], edges: str = "complete") -> dict[str, np.ndarray]:
  """The model's arrays from stored ones, vectorised over a batch.

  Args:
    batch: ``nodes`` (B, 29, 11), ``positions`` (B, 29, 3), ``bonds`` (B, 29,
      29), ``n_atoms`` (B,), ``targets`` (B, 11), ``index`` (B,).
    edges: ``"complete"`` or ``"bonded"``.

  Returns:
    ``nodes`` float32 (B, 29, 11); ``node_mask`` float32 (B, 29); ``edges``
    float32 (B, 29, 29, 5) (bond one-hot, distance in Å; zero off the edge
    set); ``edge_mask`` float32 (B, 29, 29); ``targets`` float32 (B, 11)
    (passed through); ``index`` int32 (B,).
  """
  n_atoms = np.asarray(batch["n_atoms"])
  node_mask = (np.arange(MAX_ATOMS) < n_atoms[:, None]).astype(np.float32)
  bonds = np.asarray(batch["bonds"])
  if edges == "complete":
    edge_mask = node_mask[:, :, None] * node_mask[:, None, :] * _OFF_DIAGONAL
  elif edges == "bonded":
    edge_mask = (bonds > 0).astype(np.float32)
  else:
    raise ValueError(f"edges must be one of {EDGE_SETS}, got {edges!r}.")
  # Written into one array, a coordinate at a time: a (B, 29, 29, 3) difference
  # reduced over its last axis costs 10x more in NumPy.
  features = np.zeros(bonds.shape + (EDGE_FEATURES,), np.float32)
  for t in (1, 2, 3, 4):  # bonds join real atoms only: inside either edge set
    features[..., t - 1] = bonds == t
  pos = np.asarray(batch["positions"], np.float32)
  squared = np.zeros(bonds.shape, np.float32)
  for k in range(3):
    diff = pos[:, :, None, k] - pos[:, None, :, k]
    squared += diff * diff
  features[..., 4] = np.sqrt(squared) * edge_mask
  return {"nodes": np.asarray(batch["nodes"], np.float32), "node_mask": node_mask,
          "edges": features, "edge_mask": edge_mask,
          "targets": np.asarray(batch["targets"], np.float32),
          "index": np.asarray(batch["index"], np.int32)}


def load(
    split: str,
    *,
    batch_size: int,
    data_dir: str | os.PathLike | None = None,
    source_dir: str | os.PathLike | None = None,
    perception_table: str | os.PathLike | None = None,
    edges: str = "complete",
    seed: int = 0,
    split_seed: int = 0,
    num_train: int | None = None,
    num_validation: int = 10000,
    num_test: int = 10000,
    shuffle: bool = True,
    num_epochs: int | None = None,
    shard_index: int | None = None,
    shard_count: int | None = None,
    worker_count: int = 0,
    read_threads: int = 0,
    drop_remainder: bool = True,
) -> grain.IterDataset:
  """Batches of QM9 graphs with standardised targets; the dataset is built on first use.

  Args:
    split: ``"train"``, ``"validation"`` or ``"test"``.
    batch_size: molecules per batch on this process (the papers: 120).
    data_dir: cache directory; default ``$MTL_JAX_DATA_DIR`` or ``~/.cache/mtl_jax``.
    source_dir: folder of ``qm9_part*.csv``; default qm9pack's data folder.
    perception_table: recorded perception (JSON, tests); default rdkit.
    edges: ``"complete"`` (every ordered pair of distinct atoms, the papers')
      or ``"bonded"`` (bonded pairs, both directions).
    seed: shuffle seed.
    split_seed: seed of the split's permutation (:func:`split_indices`).
    num_train: ``None`` the whole train split, else its first ``num_train``.
    num_validation: molecules in validation (10,000 in the papers).
    num_test: molecules in test (10,000 in the papers).
    shuffle: reshuffle every epoch.
    num_epochs: passes over the split; ``None`` repeats forever.
    shard_index: default ``jax.process_index()``.
    shard_count: default ``jax.process_count()``.
    worker_count: Grain worker processes (0: in the calling process).
    read_threads: Grain reader threads per process.
    drop_remainder: drop the last incomplete batch.

  Returns:
    A ``grain.IterDataset`` of dicts (batch axis first): ``nodes`` float32
    (B, 29, 11), ``node_mask`` float32 (B, 29), ``edges`` float32 (B, 29,
    29, 5), ``edge_mask`` float32 (B, 29, 29), ``targets`` float32 (B, 11)
    standardised with :func:`statistics` (columns in :data:`TARGETS`
    order; ``y = targets * std + mean`` in :data:`UNITS`), ``index`` int32
    (B,) (QM9's Index). The edges are computed per batch by
    :func:`graph_batch`, in the calling process (1.5 ms of the 9.5 ms that
    a batch of 120 costs on two CPU cores; docs/datasets.md). With
    ``worker_count > 0`` every worker receives a copy of the split's stored
    arrays (about 170 MB for train).
  """
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}.")
  if edges not in EDGE_SETS:
    raise ValueError(f"edges must be one of {EDGE_SETS}, got {edges!r}.")
  key = _key(data_dir, source_dir, perception_table)
  arrays = _all_arrays(key)
  positions = split_indices(len(arrays["index"]), split_seed, num_test, num_validation)[split]
  if split == "train" and num_train is not None:
    if num_train < 1:
      raise ValueError(f"num_train must be None or >= 1, got {num_train}.")
    positions = positions[:num_train]
  if len(positions) == 0:
    raise ValueError(f"Split {split!r} is empty; pass num_{split} > 0.")
  mean, std = _statistics(key)
  served = {k: arrays[k][positions] for k in ("nodes", "positions", "bonds", "n_atoms", "index")}
  served["targets"] = ((arrays["targets"][positions] - mean) / std).astype(np.float32)
  ds = _pipeline.make_pipeline(
      _pipeline.ArraySource(served), batch_size=batch_size, seed=seed, shuffle=shuffle,
      num_epochs=num_epochs, shard_index=shard_index, shard_count=shard_count,
      worker_count=worker_count, read_threads=read_threads, drop_remainder=drop_remainder)
  return ds.map(functools.partial(graph_batch, edges=edges))


def destandardize(targets: np.ndarray, data_dir: str | os.PathLike | None = None,
                  source_dir: str | os.PathLike | None = None,
                  perception_table: str | os.PathLike | None = None) -> np.ndarray:
  """Standardised targets (..., 11) back in :data:`UNITS`: ``y * std + mean``."""
  mean, std = _statistics(_key(data_dir, source_dir, perception_table))
  return np.asarray(targets, np.float64) * std + mean


# ------------------------------------------------------------------ verification


def check_raw(records: Iterable[Record]) -> dict[str, Any]:
  """Counts and unit checks on the raw CSV values (no perception).

  Returns:
    ``num_molecules``, ``max_index``, ``index_gaps`` (Indices in
    1..max_index absent), ``sorted`` (Index increasing), ``h_minus_u`` (min,
    max of H(298) - U(298) in Hartree), ``max_atoms``, ``elements`` (counts).
  """
  indices, diffs, max_atoms, elements = [], [], 0, dict.fromkeys(ELEMENTS, 0)
  for r in records:
    indices.append(r.index)
    diffs.append(r.values["h"] - r.values["u"])
    max_atoms = max(max_atoms, r.n_atoms)
    for e in r.elements:
      elements[e] += 1
  idx = np.array(indices)
  d = np.array(diffs)
  return {"num_molecules": len(idx), "max_index": int(idx.max()),
          "index_gaps": int(idx.max()) - len(np.unique(idx)),
          "sorted": bool(np.all(np.diff(idx) > 0)),
          "h_minus_u": (float(d.min()), float(d.max())), "max_atoms": max_atoms,
          "elements": elements}


def smiles_agreement(records: Iterable[Record], perceive: Perceive = perceive_rdkit
                     ) -> dict[str, int]:
  """Compares perceived molecules with the CSV's SMILES (needs rdkit).

  Both sides become canonical SMILES without hydrogens or stereo; returns
  the counts ``checked``, ``agree`` and ``disagree``.
  """
  Chem, _ = _rdkit()
  codes = {1: Chem.BondType.SINGLE, 2: Chem.BondType.DOUBLE, 3: Chem.BondType.TRIPLE,
           4: Chem.BondType.AROMATIC}
  counts = {"checked": 0, "agree": 0, "disagree": 0}
  for r in records:
    p = perceive(r)
    mol = Chem.RWMol()
    for e, a in zip(r.elements, p.aromatic):
      atom = Chem.Atom(e)
      atom.SetIsAromatic(bool(a))
      atom.SetNoImplicit(True)
      mol.AddAtom(atom)
    for i, j in zip(*np.nonzero(np.triu(p.bonds))):
      mol.AddBond(int(i), int(j), codes[int(p.bonds[i, j])])
      if p.bonds[i, j] == 4:
        mol.GetBondBetweenAtoms(int(i), int(j)).SetIsAromatic(True)
    try:
      mol.UpdatePropertyCache(strict=False)
      ours = Chem.MolToSmiles(Chem.RemoveAllHs(mol, sanitize=False), isomericSmiles=False)
      ref = Chem.MolFromSmiles(r.smiles)
      theirs = Chem.MolToSmiles(Chem.RemoveAllHs(ref), isomericSmiles=False)
      same = Chem.MolToSmiles(Chem.MolFromSmiles(ours), isomericSmiles=False) == theirs
    except Exception:  # any failure to parse or sanitise counts as a disagreement
      same = False
    counts["checked"] += 1
    counts["agree" if same else "disagree"] += 1
  return counts


def verify(data_dir: str | os.PathLike | None = None,
           source_dir: str | os.PathLike | None = None, smiles_every: int = 20,
           out=sys.stdout) -> bool:
  """Checks the real data and prints the report of docs/datasets.md.

  Counts molecules (130,831) and Index gaps (133,885 - 130,831 = 3,054),
  checks H(298) - U(298) = RT = 0.000944 Hartree on every molecule, builds
  the dataset if needed (timed), counts the perception strategies, compares
  every ``smiles_every``-th molecule with its SMILES (0: skip), and prints
  the mean and std of each target. Returns whether every check passed.
  """
  def say(*args):
    print(*args, file=out, flush=True)

  files = csv_files(source_dir)
  say(f"source: {len(files)} CSV files in {files[0].parent}")
  raw = check_raw(read_records(source_dir))
  ok_count = raw["num_molecules"] == NUM_MOLECULES
  ok_gaps = raw["max_index"] == NUM_INDICES and raw["index_gaps"] == NUM_INDICES - NUM_MOLECULES
  lo, hi = raw["h_minus_u"]
  ok_rt = RT_HARTREE - _RT_TOLERANCE <= lo <= hi <= RT_HARTREE + _RT_TOLERANCE
  say(f"molecules: {raw['num_molecules']} (expected {NUM_MOLECULES}): "
      f"{'OK' if ok_count else 'FAIL'}")
  say(f"Index: 1..{raw['max_index']}, increasing: {raw['sorted']}, gaps: {raw['index_gaps']} "
      f"(expected {NUM_INDICES} - {NUM_MOLECULES} = {NUM_INDICES - NUM_MOLECULES}): "
      f"{'OK' if ok_gaps else 'FAIL'}")
  say(f"H(298) - U(298) over all molecules: min {lo:.6f}, max {hi:.6f} Hartree "
      f"(RT = {RT_HARTREE} +- 1e-6, the CSV's last decimal): {'OK' if ok_rt else 'FAIL'}")
  say(f"atoms: at most {raw['max_atoms']} per molecule (MAX_ATOMS = {MAX_ATOMS}); "
      + ", ".join(f"{e} {c}" for e, c in raw["elements"].items()))
  start = time.perf_counter()
  arrays = molecules(data_dir, source_dir)
  say(f"dataset ready in {time.perf_counter() - start:.1f} s "
      f"({len(arrays['index'])} molecules; includes the build on first run)")
  counts = np.bincount(arrays["perception"], minlength=len(PERCEPTION_STRATEGIES))
  say("perception: " + ", ".join(f"{s} {c}" for s, c in zip(PERCEPTION_STRATEGIES, counts)))
  ok_stored = np.array_equal(arrays["index"], np.sort(arrays["index"]))
  if smiles_every:
    sample = (r for i, r in enumerate(read_records(source_dir)) if i % smiles_every == 0)
    agree = smiles_agreement(sample)
    say(f"SMILES agreement (every {smiles_every}th molecule, heavy-atom graph with bond "
        f"orders, no stereo): {agree['agree']} of {agree['checked']}")
  mean, std = statistics(data_dir, source_dir)
  say(f"{'target':<7}{'unit':<11}{'mean':>14}{'std':>14}")
  for t, m, s in zip(TARGETS, mean, std):
    say(f"{t:<7}{UNITS[t]:<11}{m:>14.4f}{s:>14.4f}")
  ok = ok_count and ok_gaps and ok_rt and ok_stored
  say("all checks passed" if ok else "SOME CHECKS FAILED")
  return ok


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m mtl_jax.data.qm9",
                                   description="Build and verify the QM9 dataset.")
  parser.add_argument("command", choices=("verify", "build"))
  parser.add_argument("--data_dir", default=None)
  parser.add_argument("--source_dir", default=None)
  parser.add_argument("--smiles_every", type=int, default=20,
                      help="compare every n-th molecule with its SMILES (0: skip)")
  args = parser.parse_args(argv)
  if args.command == "build":
    start = time.perf_counter()
    generate(args.data_dir, args.source_dir)
    print(f"built in {time.perf_counter() - start:.1f} s")
    return 0
  return 0 if verify(args.data_dir, args.source_dir, args.smiles_every) else 1


if __name__ == "__main__":
  # ``python -m`` runs a second copy of this file; use the package's module
  # (the one mtl_jax.data imported), so that one builder class and one cache exist.
  from mtl_jax.data import qm9 as _module
  sys.exit(_module.main())
