"""Get MNIST prepared where the suite reads it (TFDS's layout under the TFDS data
directory), once, by one of two routes:

    python -m experiments.data                     # make data: TFDS's own download
    python -m experiments.data --idx_dir=DIR       # make data IDX=DIR: the four IDX files

Nothing happens when the copy is already prepared. The download route is TFDS's own
`download_and_prepare` (with its progress bars). The IDX route reads the four MNIST
files (train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte,
t10k-labels-idx1-ubyte, each raw or .gz) and writes the same dataset TFDS would: the
official .gz files are checked against TFDS's recorded SHA-256 sums first
(--noverify_checksums for other copies). Offline and without IDX files, one line says
both ways out.
"""

import gzip
import hashlib
import os
import shutil
import sys
import tempfile

from absl import flags

from cluster import cli
from trainers.common.flags import resolve_data_dir

IDX_FILES = {"train_data": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
             "test_data": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}
IDX_MAGIC = {"data": 2051, "labels": 2049}
DATASET = "mnist"


class DataRouteError(Exception):
  """One line: what is missing or wrong, and the way out."""


def official_sums() -> dict[str, str]:
  """file name -> SHA-256 of the official .gz files, as TFDS records them."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  path = os.path.join(os.path.dirname(tfds.__file__), "url_checksums", f"{DATASET}.txt")
  sums = {}
  with open(path) as f:
    for line in f:
      parts = line.split()
      if len(parts) >= 4:
        sums[parts[3]] = parts[2]
  return sums


def find_idx(idx_dir: str) -> dict[str, str]:
  """key -> path of each of the four files in `idx_dir` (raw or .gz)."""
  found = {}
  for key, stem in IDX_FILES.items():
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx")):
      if os.path.isfile(os.path.join(idx_dir, name)):
        found[key] = os.path.join(idx_dir, name)
        break
    else:
      raise DataRouteError(f"--idx_dir={idx_dir}: no {stem}[.gz] there (MNIST's four IDX "
                           f"files: {', '.join(IDX_FILES.values())})")
  return found


def verify(paths: dict[str, str]) -> None:
  """Each file is the official .gz, byte for byte (TFDS's SHA-256 sums)."""
  sums = official_sums()
  for path in paths.values():
    name = os.path.basename(path)
    if name not in sums:
      raise DataRouteError(f"{path}: not one of the official .gz files ({', '.join(sums)}); "
                           "give those, or --noverify_checksums for another copy")
    with open(path, "rb") as f:
      digest = hashlib.sha256(f.read()).hexdigest()
    if digest != sums[name]:
      raise DataRouteError(f"{path}: SHA-256 {digest[:16]}... is not the official "
                           f"{sums[name][:16]}...; the file is damaged or not MNIST's")


def raw_copy(path: str, out_dir: str) -> tuple[str, int]:
  """(uncompressed copy of an IDX file, its item count), checking its header."""
  kind = "labels" if "labels" in os.path.basename(path) else "data"
  opener = gzip.open if path.endswith(".gz") else open
  out = os.path.join(out_dir, os.path.basename(path).removesuffix(".gz"))
  with opener(path, "rb") as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst)
  with open(out, "rb") as f:
    header = f.read(16 if kind == "data" else 8)
  magic, count = int.from_bytes(header[:4], "big"), int.from_bytes(header[4:8], "big")
  if magic != IDX_MAGIC[kind] or (kind == "data" and header[8:16] != bytes(
      [0, 0, 0, 28, 0, 0, 0, 28])):
    raise DataRouteError(f"{path}: not an MNIST IDX {kind} file (magic {magic})")
  return out, count


def _tfds():
  """tensorflow_datasets with its GCS probing off (data._tfds_offline): the routes
  reach only the MNIST mirror, or nothing."""
  from trainers.common import data  # pylint: disable=g-import-not-at-top
  return data._tfds_offline()  # pylint: disable=protected-access


def prepare_from_idx(idx_dir: str, data_dir: str, check_sums: bool = True) -> str:
  """Writes TFDS's `mnist` under `data_dir` from the IDX files; returns its folder."""
  tfds = _tfds()
  from tensorflow_datasets.image_classification import mnist  # pylint: disable=g-import-not-at-top
  paths = find_idx(idx_dir)
  if check_sums:
    verify(paths)
  with tempfile.TemporaryDirectory() as tmp:
    raw = {k: raw_copy(p, tmp) for k, p in paths.items()}
    for split in ("train", "test"):
      if raw[f"{split}_data"][1] != raw[f"{split}_labels"][1]:
        raise DataRouteError(f"{split}: {raw[f'{split}_data'][1]} images but "
                             f"{raw[f'{split}_labels'][1]} labels")

    class IdxMnist(mnist.MNIST, skip_registration=True):
      name = DATASET

      def _split_generators(self, dl_manager):
        del dl_manager  # the files are here already
        return [tfds.core.SplitGenerator(name=split, gen_kwargs=dict(
            num_examples=raw[f"{split}_data"][1], data_path=raw[f"{split}_data"][0],
            label_path=raw[f"{split}_labels"][0])) for split in ("train", "test")]

    builder = IdxMnist(data_dir=data_dir)
    builder.download_and_prepare()
    return builder.data_dir


def prepare_by_download(data_dir: str, builder=None) -> str:
  """TFDS's own download and prepare (its progress bars), into `data_dir`."""
  tfds = _tfds()
  builder = builder or tfds.builder(DATASET, data_dir=data_dir)
  try:
    _reachable(getattr(builder, "URL", ""))  # offline: say so now, not after TFDS's retries
    builder.download_and_prepare()
  except Exception as e:  # pylint: disable=broad-except  (offline, refused, DNS, ...)
    raise DataRouteError(
        f"{DATASET} is not prepared in {data_dir} and TFDS could not download it "
        f"({type(e).__name__}); either point --data_dir or TFDS_DATA_DIR at a prepared copy "
        "(e.g. ../shared/data/tensorflow_datasets), or prepare one from the four MNIST IDX "
        "files: make data IDX=<dir with them>") from None
  return builder.data_dir


def _reachable(url: str, timeout_s: float = 5.0) -> None:
  """OSError unless the mirror's host takes a TCP connection within `timeout_s`."""
  import socket  # pylint: disable=g-import-not-at-top
  import urllib.parse  # pylint: disable=g-import-not-at-top
  parts = urllib.parse.urlsplit(url)
  if parts.hostname:
    port = parts.port or (443 if parts.scheme == "https" else 80)
    socket.create_connection((parts.hostname, port), timeout=timeout_s).close()


def is_prepared(data_dir: str) -> bool:
  from launch import preflight  # pylint: disable=g-import-not-at-top
  try:
    preflight.check_dataset(DATASET, data_dir)
    return True
  except ValueError:
    return False


def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_string("idx_dir", None, "Prepare from the four MNIST IDX files in this "
                      "directory instead of downloading.", flag_values=fv)
  flags.DEFINE_string("data_dir", None, "TFDS data directory to prepare into (default: "
                      "$TFDS_DATA_DIR, else ../shared/data/tensorflow_datasets if it exists, "
                      "else ~/tensorflow_datasets).", flag_values=fv)
  flags.DEFINE_bool("verify_checksums", True, "With --idx_dir: the files must be the "
                    "official .gz files (TFDS's SHA-256 sums).", flag_values=fv)


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv if argv is None else argv
  fv = flags.FlagValues()
  define_flags(fv)
  prog = cli.prog("experiments.data")
  cli.exit_if_answered(argv, fv, prog, __doc__)
  try:
    fv(argv)
  except flags.Error as e:
    print(f"{prog}: error: {e}", file=sys.stderr)
    return 2
  data_dir = resolve_data_dir(fv.data_dir)
  if fv.idx_dir is None and is_prepared(data_dir):
    print(f"{prog}: {DATASET} is prepared in {data_dir}", flush=True)
    return 0
  try:
    with cli.quiet_tf_startup():
      import tensorflow_datasets  # pylint: disable=g-import-not-at-top,unused-import
    where = (prepare_from_idx(fv.idx_dir, data_dir, fv.verify_checksums) if fv.idx_dir
             else prepare_by_download(data_dir))
  except DataRouteError as e:
    print(f"{prog}: error: {e}", file=sys.stderr)
    return 66
  print(f"{prog}: {DATASET} prepared in {where}", flush=True)
  return 0


def run_main() -> None:
  """The console script's entry."""
  sys.exit(main())


if __name__ == "__main__":
  sys.exit(main())
