"""What every result records about where it came from: versions, machine, device, command."""
from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

_PACKAGES = ("otbench", "torch", "torchvision", "numpy", "torchattacks", "adversarial-robustness-toolbox",
             "nevergrad", "timm", "robustbench", "scipy")


@lru_cache(maxsize=1)
def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    commit = _git_commit()
    if commit:
        out["otbench-git"] = commit
    return out


def _git_commit() -> str | None:
    if os.environ.get("OTBENCH_GIT"):  # a copy of the tree without .git (a remote GPU machine) says it here
        return os.environ["OTBENCH_GIT"]
    try:
        root = Path(__file__).resolve().parent.parent
        out = subprocess.run(["git", "-C", str(root), "describe", "--always", "--dirty"], capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


@lru_cache(maxsize=1)
def machine() -> str:
    """One line a reader can compare: CPU model and cores, and the GPU when there is one."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = f"{cpu}, {os.cpu_count()} cores, {platform.system()}"
    if torch.cuda.is_available():
        text += f", GPU {torch.cuda.get_device_name(0)}"
    return text


def device_name(device: torch.device | str) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"


_COMMAND: list[str] | None = None


def set_command(argv: list[str]) -> None:
    """The CLI records the command it is running (sys.argv is not it when main() is called in-process)."""
    global _COMMAND
    _COMMAND = ["otbench", *argv]


def command_line() -> str:
    if _COMMAND is not None:
        return shlex.join(_COMMAND)
    return shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "python"


def resolve_device(requested: str | None) -> torch.device:
    from .errors import OTBenchError

    valid = "auto, cpu, cuda, cuda:N"
    if requested in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except (RuntimeError, TypeError):
        raise OTBenchError(f"unknown device '{requested}'; valid: {valid}") from None
    if device.type not in ("cpu", "cuda"):
        raise OTBenchError(f"device '{requested}' is not supported by otbench; valid: {valid}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise OTBenchError(f"--device {requested} was asked for but no CUDA GPU is available; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise OTBenchError(f"--device {requested}: there are {torch.cuda.device_count()} CUDA devices; valid: "
                               f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return device
