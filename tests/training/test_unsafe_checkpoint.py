"""A planted pickle in a trainer checkpoint is refused and never executed (trainer state: weights_only)."""

import os
import pickle

import torch

from edlm.cli import main


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # what an attacker's checkpoint would do on unpickling
        return (os.system, (f"touch {self.marker}",))


def test_malicious_resume_checkpoint_is_refused_and_not_run(tmp_path, capsys):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    marker = tmp_path / "PWNED"
    with open(run_dir / "checkpoints" / "last.ckpt", "wb") as f:
        torch.save({"state_dict": {}, "evil": _Payload(marker)}, f, pickle_protocol=pickle.DEFAULT_PROTOCOL)
    code = main(["train", "mdlm", "--preset", "tiny", "--run-dir", str(run_dir), "--resume"])
    assert code != 0
    err = capsys.readouterr().err
    assert err.startswith("edlm: error: refusing to resume") and "Traceback" not in err
    assert not marker.exists()  # the payload never ran
