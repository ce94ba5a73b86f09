"""Does a fresh export train, unmodified? Records a short episode from the simulated rig, exports it
(``--image-size``, one shape across cameras) and runs lerobot's own ``lerobot-train`` for a few steps
with ACT and with diffusion, offline (no pretrained backbone, no hub, CPU), from the lerobot virtualenv.
Prints each run's command, its loss per step and whether the loss fell; exits 1 when a run fails.

    python bench/lerobot_train_check.py [--venv /root/lerobot-venv] [--steps 5] [--seconds 8] [--keep DIR]

Run it before each change to the export (docs/datasets.md quotes its output). The virtualenv:
``python3 -m venv /root/lerobot-venv`` and lerobot 0.4.4 in it (docs/datasets.md, "Training with lerobot").
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.dataset_jobs import record_episodes  # noqa: E402
from capture_app.dataset.commands import export_lerobot  # noqa: E402
from capture_app.dataset.lerobot_export import ExportOptions  # noqa: E402

# diffusion's preset warms its learning rate up over 500 steps (5 steps would barely move it) and its loss is
# a noise-prediction error at random timesteps: no warm-up and a larger batch, so 5 steps show the trend
POLICY_ARGS = {"diffusion": ["--policy.scheduler_warmup_steps=0"]}
BATCH_SIZE = {"act": 2, "diffusion": 8}
LOSS = re.compile(r"step:(\S+).*?loss:([0-9.]+)")


def train_command(venv: Path, root: Path, policy: str, steps: int, out: Path, backend: str) -> list[str]:
    """The offline ``lerobot-train`` call (docs/datasets.md): CPU, no hub, no pretrained backbone."""
    return [str(venv / "bin/lerobot-train"), "--dataset.repo_id=local/capture-export", f"--dataset.root={root}",
            f"--dataset.video_backend={backend}", f"--policy.type={policy}", "--policy.pretrained_backbone_weights=null",
            "--policy.device=cpu", "--policy.push_to_hub=false", f"--batch_size={BATCH_SIZE.get(policy, 2)}",
            f"--steps={steps}",
            "--log_freq=1", "--num_workers=0", "--save_checkpoint=false", "--wandb.enable=false",
            f"--output_dir={out}", *POLICY_ARGS.get(policy, [])]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--venv", default="/root/lerobot-venv", help="virtualenv with lerobot installed")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=8.0, help="length of the recorded episode")
    parser.add_argument("--image-size", default="320x240", help="export --image-size (default 320x240)")
    parser.add_argument("--policies", default="act,diffusion")
    parser.add_argument("--keep", help="keep the export in this folder")
    parser.add_argument("--video-backend", default="torchcodec",
                        help="lerobot's decoder: torchcodec (needs FFmpeg's libraries) or pyav (needs torchvision<0.26)")
    args = parser.parse_args()
    venv = Path(args.venv)
    if not (venv / "bin/lerobot-train").exists():
        raise SystemExit(f"{venv}/bin/lerobot-train not found: create the virtualenv first (docs/datasets.md)")
    w, h = (int(v) for v in args.image_size.split("x"))
    failed = 0
    with tempfile.TemporaryDirectory(prefix="lerobot-train-check-") as tmp:
        tmp = Path(tmp)
        record_episodes(tmp / "episodes", distinct=1, seconds=args.seconds, total=1)
        root = Path(args.keep) if args.keep else tmp / "export"
        info, text = export_lerobot([str(tmp / "episodes")], root, ExportOptions(image_size=(w, h)), workers=1,
                                    overwrite=True, progress=False)
        print(f"export: {text}; {info['total_frames']} frames, images {w}x{h}, "
              f"export version {info['capture_app_export_version']}")
        env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", WANDB_MODE="disabled")
        env.pop("PYTHONPATH", None)
        for policy in args.policies.split(","):
            command = train_command(venv, root, policy, args.steps, tmp / f"train-{policy}", args.video_backend)
            print("$ " + " ".join(shlex.quote(c) for c in command), flush=True)
            run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
            output = run.stdout + run.stderr
            losses = [float(m.group(2)) for m in LOSS.finditer(output)]
            if run.returncode != 0 or not losses:
                failed += 1
                print(f"{policy}: FAILED (exit {run.returncode})\n" + "\n".join(output.splitlines()[-25:]))
                continue
            fell = losses[-1] < losses[0]
            failed += not fell
            print(f"{policy}: exit 0, loss per step {' '.join(f'{v:.3f}' for v in losses)} "
                  f"({'falls' if fell else 'DOES NOT FALL'})", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
