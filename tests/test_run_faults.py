"""Faults a training run survives or reports in one line: kills at any point (resumed to the
uninterrupted run's result), two writers, damaged and crafted checkpoints, failed writes."""

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import fabula.checkpoint
import fabula.run.loop
import fabula.rundir
from fabula.checkpoint import TEMPORARY, encode
from fabula.cli import main
from fabula.errors import RunError
from fabula.run import load_run
from fabula.rundir import RunDirectory

EPOCHS = 4
TINY = ["--latent-dim", "4", "--hidden", "16", "--batch-size", "128", "--no-reference", "--quiet"]
CLI = [sys.executable, "-c", "import sys; from fabula.cli import main; sys.exit(main(sys.argv[1:]))"]


def train_args(out, epochs=EPOCHS, resume=False):
    return [
        "train",
        "nvdm",
        "--out",
        str(out),
        "--epochs",
        str(epochs),
        *TINY,
        *(["--resume"] if resume else []),
    ]


def untimed(history):
    return [{k: v for k, v in m.items() if k != "train_seconds"} for m in history]


def same_values(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same_values(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(same_values, a, b))
    return a == b


def assert_same_run(run, reference):
    """The run's checkpoint (weights, training state, metadata) and every metrics line equal the
    reference run's, timing aside; nothing a writer left behind remains."""
    a, b = RunDirectory(run).load(), RunDirectory(reference).load()
    assert a.metadata["epoch"] == EPOCHS
    assert same_values(a.weights, b.weights) and same_values(a.state, b.state)
    assert {**a.metadata, "history": None} == {**b.metadata, "history": None}
    history = untimed(b.metadata["history"])
    assert untimed(a.metadata["history"]) == history == untimed(RunDirectory(run).history())
    assert [m["epoch"] for m in history] == list(range(1, EPOCHS + 1))
    assert not [p.name for p in run.iterdir() if TEMPORARY.fullmatch(p.name) or p.name == ".lock"]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """An uninterrupted run."""
    run = tmp_path_factory.mktemp("straight") / "run"
    assert main(train_args(run)) == 0
    return run


class Killed(BaseException):
    """Stands for SIGKILL: nothing catches it."""


def test_a_kill_between_checkpoint_and_metrics_loses_nothing(tmp_path, monkeypatch, straight, capsys):
    run = tmp_path / "run"
    save = fabula.rundir.save_checkpoint

    def save_then_die(path, modules, state, metadata):
        save(path, modules, state, metadata)
        if metadata["epoch"] == 2:
            raise Killed

    monkeypatch.setattr(fabula.rundir, "save_checkpoint", save_then_die)
    with pytest.raises(Killed):
        main(train_args(run))
    monkeypatch.undo()
    metrics = run / RunDirectory.METRICS
    assert [m["epoch"] for m in RunDirectory(run).history()] == [1]  # epoch 2 is in the checkpoint only
    text = metrics.read_text()
    metrics.write_text(text[: len(text) // 2])  # and a kill in the middle of appending a line
    with pytest.raises(RunError, match=r"metrics\.jsonl, line 1: damaged"):
        RunDirectory(run).history()
    assert main(train_args(run, resume=True)) == 0
    assert_same_run(run, straight)


def wait_for(condition, child, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert child.poll() is None, "the training process ended early"
        assert time.monotonic() < deadline, "the training process made no progress"
        time.sleep(0.01)


def holder_pid(run):
    try:
        return json.loads((run / RunDirectory.LOCK).read_text())["pid"]
    except (OSError, ValueError):
        return None


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_runs_killed_at_random_points_resume_to_the_uninterrupted_run(seed, tmp_path, straight, capsys):
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [*CLI, *train_args(run)]
    with subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as child:
        try:
            wait_for(lambda: holder_pid(run) == child.pid, child)
            if seed == 0:  # a second writer is refused while the run trains, naming the holder
                assert main(train_args(run)) == 2
            wait_for((run / RunDirectory.CHECKPOINT).exists, child)
            if seed == 0:  # and so is a resume
                assert main(train_args(run, resume=True)) == 2
                errors = capsys.readouterr().err.splitlines()
                assert len(errors) == 2 and all(
                    f"is being written by pid {child.pid} on " in e for e in errors
                )
            time.sleep(random.Random(seed).uniform(0.0, 2.5))  # into epochs 2 to 4
        finally:
            child.send_signal(signal.SIGKILL)
            stderr = child.communicate()[1].decode()
    assert child.returncode in (-signal.SIGKILL, 0), stderr
    done = RunDirectory(run).load().metadata["epoch"]
    if done < EPOCHS:  # killed while training
        assert (run / RunDirectory.LOCK).exists()
    # the lock the dead child left is taken over; a resume with no epoch left to train is refused
    assert main(train_args(run, resume=True)) == (0 if done < EPOCHS else 2)
    assert_same_run(run, straight)


def test_a_stale_lock_and_temporary_files_are_cleared(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / RunDirectory.LOCK).write_text(json.dumps({"pid": 2**22 + 1, "host": "gone", "started": "then"}))
    leftovers = [".checkpoint.safetensors.tmp123", ".curves.png.tmp77", ".metrics.jsonl.tmp5"]
    for name in leftovers:
        (run / name).write_bytes(b"half a file")
    (run / "notes.tmp1").write_text("not ours")
    assert main(train_args(run, epochs=1)) == 0
    assert sorted(p.name for p in run.iterdir()) == [
        "checkpoint.safetensors",
        "curves.png",
        "metrics.jsonl",
        "notes.tmp1",
        "topics.txt",
    ]


@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory):
    run = tmp_path_factory.mktemp("one") / "run"
    assert main(train_args(run, epochs=1)) == 0
    return run


def rewrite(run, edit_header=None, edit_tensors=None, text=None):
    """Rewrite the run's checkpoint, its sha256 recomputed: a crafted (not a damaged) file."""
    path = run / RunDirectory.CHECKPOINT
    tensors = load_file(str(path))
    with safe_open(str(path), framework="pt") as f:
        header = json.loads(f.metadata()["fabula"])
    if edit_header:
        edit_header(header)
    if edit_tensors:
        edit_tensors(tensors)
    path.write_bytes(encode(tensors, text or json.dumps(header)))


def story_config(**changes):
    return lambda header: header["metadata"]["story_config"].update(changes)


DEEP = 100_000
CRAFTED = {
    "an unknown constructor argument": (
        {"edit_header": story_config(__class__="NVDM")},
        "field 'metadata/story_config/__class__' is unknown",
    ),
    "no training state": (
        {"edit_header": lambda h: h.pop("state")},
        "field 'state' is missing",
    ),
    "weights of another size": (
        {"edit_tensors": lambda t: t.update({"weights/story/decoder.weight": torch.zeros(5, 4)})},
        r"field 'weights/story/decoder.weight' is torch.float32 \[5, 4\]; the rebuilt story has "
        r"torch.float32 \[\d+, 4\]",
    ),
    "JSON nested 100,000 deep": (
        {"text": '{"metadata": {"x": ' + "[" * DEEP + "]" * DEEP + '}, "state": {}}'},
        f"field 'fabula' nests {DEEP + 2} deep",
    ),
    "a vocabulary of 10^12 words": (
        {"edit_header": story_config(vocab_size=10**12)},
        r"field 'metadata/story_config/vocab_size' is 1000000000000: not int, or out of \[0, 2147483648\)",
    ),
    "a vocabulary of 10^9 words (shapes checked without allocating them)": (
        {"edit_header": story_config(vocab_size=10**9)},
        r"field 'weights/story/decoder.bias' is torch.float32 \[\d+\]; the rebuilt story has "
        r"torch.float32 \[1000000000\]",
    ),
    "a constructor refusing its arguments": (
        {"edit_header": lambda h: h["metadata"]["guide_config"].update(activation="wiggly")},
        "field 'metadata/guide_config' is refused by NormalGuide",
    ),
    "an epoch that is not a number": (
        {"edit_header": lambda h: h["metadata"].update(epoch="1")},
        "field 'metadata/epoch' is '1', not an epoch number",
    ),
    "an unknown setting": (
        {"edit_header": lambda h: h["metadata"]["train"]["run"].update(wiggle=1)},
        "field 'metadata/train/run/wiggle' is unknown",
    ),
    "a setting of the wrong type": (
        {"edit_header": lambda h: h["metadata"]["train"]["optimizer"].update(lr="fast")},
        "field 'metadata/train/optimizer/lr' is \"fast\": not float",
    ),
    "a reference to a missing tensor": (
        {"edit_header": lambda h: h["state"]["rng"][0].update(cpu={"__tensor__": "state/none"})},
        "field 'state/rng/0/cpu' refers to tensor 'state/none', which the file lacks",
    ),
}


@pytest.mark.parametrize("case", CRAFTED)
def test_crafted_checkpoints_are_refused_naming_the_file_and_field(case, one_epoch, tmp_path):
    edits, message = CRAFTED[case]
    run = tmp_path / "run"
    shutil.copytree(one_epoch, run)
    rewrite(run, **edits)
    with pytest.raises(RunError, match=message) as refused:
        load_run(run)
    assert str(refused.value).startswith(str(run / RunDirectory.CHECKPOINT))
    assert "\n" not in str(refused.value)


def test_a_resume_refuses_a_training_state_that_does_not_fit(one_epoch, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(one_epoch, run)
    rewrite(run, edit_header=lambda h: h["state"].update(inference={"num_steps": 3}))
    assert main(train_args(run, epochs=2, resume=True)) == 2
    assert "field 'state/inference' does not fit the vae setup (KeyError" in capsys.readouterr().err


def overwrite_tensor_bytes(path):
    """Flip 64 bytes in the middle of a checkpoint's tensor data (which follow its header)."""
    data = bytearray(path.read_bytes())
    start = 8 + int.from_bytes(data[:8], "little")
    middle = (start + len(data)) // 2
    data[middle : middle + 64] = bytes(b ^ 0xFF for b in data[middle : middle + 64])
    path.write_bytes(bytes(data))


def test_overwritten_tensor_bytes_are_detected(one_epoch, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(one_epoch, run)
    path = run / RunDirectory.CHECKPOINT
    overwrite_tensor_bytes(path)
    for command in (["evaluate", str(run)], train_args(run, epochs=2, resume=True)):
        assert main(command) == 2
        error = capsys.readouterr().err
        assert error.count("\n") == 1
        assert f"{path}: damaged: its contents do not match the sha256 in its header" in error


def test_a_diverged_run_says_whether_its_last_checkpoint_is_intact(tmp_path, monkeypatch, capsys):
    assert main([*train_args(tmp_path / "first", epochs=2), "--lr", "1e6"]) == 2
    error = capsys.readouterr().err
    assert "non-finite loss" in error and "no checkpoint has been written yet" in error
    assert "intact" not in error and not (tmp_path / "first" / RunDirectory.LOCK).exists()

    evaluate, reports = fabula.run.loop.evaluate, []

    class Infinite:
        def __init__(self, report):
            self.report = report

        def summary(self):
            return {**self.report.summary(), "perplexity": float("inf")}

    def evaluate_then(damage):
        def fake(*args, **kwargs):
            reports.append(evaluate(*args, **kwargs))
            if len(reports) % 2:
                return reports[-1]
            if damage:
                overwrite_tensor_bytes(damage)
            return Infinite(reports[-1])

        return fake

    run = tmp_path / "second"
    monkeypatch.setattr(fabula.run.loop, "evaluate", evaluate_then(None))
    assert main(train_args(run, epochs=3)) == 2
    error = capsys.readouterr().err
    assert error == (
        "fabula train: error: eval_perplexity is inf after epoch 2, so the epoch is not recorded; "
        f"{run / RunDirectory.CHECKPOINT} holds epoch 1 (the last checkpoint is intact)\n"
    )
    assert [m["epoch"] for m in RunDirectory(run).history()] == [1]

    run = tmp_path / "third"
    monkeypatch.setattr(fabula.run.loop, "evaluate", evaluate_then(run / RunDirectory.CHECKPOINT))
    assert main(train_args(run, epochs=3)) == 2
    error = capsys.readouterr().err
    assert "the last checkpoint does not verify" in error and "damaged" in error and "intact" not in error


def failing_open(error: int, after: int = 0):
    """``open`` for fabula.checkpoint whose writes fail with ``error`` after ``after`` good ones
    (half the file written first, as a full disk does)."""
    writes = []

    def fake(file, mode="r", *args, **kwargs):
        f = open(file, mode, *args, **kwargs)
        if "w" in mode:
            writes.append(file)
            if len(writes) > after:
                f.write(b"\0" * 100)
                f.close()
                raise OSError(error, os.strerror(error))
        return f

    return fake


def test_a_full_disk_is_one_line_and_loses_nothing(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    monkeypatch.setattr(fabula.checkpoint, "open", failing_open(errno.ENOSPC, after=1), raising=False)
    assert main(train_args(run, epochs=2)) == 2
    monkeypatch.undo()
    error = capsys.readouterr().err
    checkpoint = run / RunDirectory.CHECKPOINT
    assert error == (
        f"fabula train: error: cannot write the checkpoint of epoch 2 at {checkpoint}: No space left on "
        f"device; {checkpoint} holds epoch 1 (the last checkpoint is intact)\n"
    )
    assert sorted(p.name for p in run.iterdir()) == [
        "checkpoint.safetensors",
        "curves.png",
        "metrics.jsonl",
        "topics.txt",
    ]
    assert [m["epoch"] for m in RunDirectory(run).history()] == [1]
    assert main(train_args(run, epochs=2, resume=True)) == 0
    assert [m["epoch"] for m in RunDirectory(run).history()] == [1, 2]


def test_a_read_only_file_system_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(fabula.checkpoint, "open", failing_open(errno.EROFS), raising=False)
    assert main(train_args(tmp_path / "run", epochs=1)) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "Read-only file system" in error
    assert error.endswith("no checkpoint has been written yet\n")


@pytest.mark.skipif(os.geteuid() == 0, reason="permissions do not bind root")
def test_a_read_only_run_directory_is_one_line(one_epoch, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(one_epoch, run)
    run.chmod(0o555)
    try:
        assert main(train_args(run, epochs=2, resume=True)) == 2
    finally:
        run.chmod(0o755)
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "Permission denied" in error
    assert error.endswith("holds epoch 1 (the last checkpoint is intact)\n")


def test_an_out_below_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("not a directory")
    assert main(train_args(tmp_path / "file" / "run", epochs=1)) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert f"cannot write the run directory at {tmp_path / 'file' / 'run'}: Not a directory" in error


def test_no_epochs_is_refused_and_writes_nothing(tmp_path, capsys):
    assert main(train_args(tmp_path / "run", epochs=0)) == 2
    assert "epochs" in capsys.readouterr().err and not (tmp_path / "run").exists()


def snapshot(run):
    """Every file in ``run`` with its bytes and modification time."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in run.iterdir()}


def test_a_resume_that_would_train_no_epoch_is_refused_and_writes_nothing(
    one_epoch, straight, tmp_path, capsys
):
    def refused(run, epochs, done):
        assert main(train_args(run, epochs=epochs, resume=True)) == 2
        assert capsys.readouterr().err == (
            f"fabula train: error: the run in {run} has trained {done}; --epochs {epochs} would "
            f"train none: ask for more than {done.split()[0]} to continue it\n"
        )

    for source, epochs, done in ((one_epoch, 1, "1 epoch"), (straight, 3, f"{EPOCHS} epochs")):
        run = tmp_path / source.parent.name
        shutil.copytree(source, run)
        before = snapshot(run)
        refused(run, epochs, done)
        assert snapshot(run) == before
    # left as a writer killed after its last checkpoint leaves it: put in order, then refused
    (run / RunDirectory.LOCK).write_text(json.dumps({"pid": 2**22 + 1, "host": "gone", "started": "then"}))
    metrics = run / RunDirectory.METRICS
    metrics.write_text(metrics.read_text().splitlines()[0] + "\n")
    refused(run, EPOCHS, f"{EPOCHS} epochs")
    assert_same_run(run, straight)
