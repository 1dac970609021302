"""How the forward pass runs: one choice, shared by every server and by the ceiling.

- `eager`: PyTorch as loaded (the original benchmark's);
- `channels_last`: PyTorch with NHWC tensors, the layout oneDNN's convolutions prefer;
- `compile`: `torch.compile` (Inductor) with dynamic batch sizes, compiled at load;
- `onnxruntime`: exported to ONNX, run by ONNX Runtime (its CUDA provider where present);
- `openvino`: converted to OpenVINO IR, run by OpenVINO on the CPU, in fp32;
- `half`: PyTorch in float16 on a GPU, bfloat16 on a CPU, channels_last;
- `graphs` (CUDA only): `half` compiled with `torch.compile(mode="reduce-overhead")`, which
  records each batch size's kernels once as a CUDA graph and replays it with one launch;
  batches are padded up to a few bucket sizes (`BUCKETS`) so that only those are recorded.

On a CUDA GPU the PyTorch runtimes run there (compile with Inductor's Triton kernels);
OpenVINO stays on the CPU (its GPU plugin is for Intel GPUs).

Every runtime gives logits for a (N, 3, 224, 224) float batch. A converted model
(ONNX, OpenVINO IR) is cached on disk under `cache_dir`, keyed by a hash of the
weights, so a restart loads it instead of converting again. `build_runtime` checks
the new runtime against eager PyTorch on a few images and refuses one that changes
the answers (another top-1, or a probability off by more than 1e-3): reduced
precision is only used where it keeps them.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

log = logging.getLogger("demo_servers")

RUNTIMES = ("eager", "channels_last", "compile", "onnxruntime", "openvino", "half", "graphs")
HALF_RUNTIMES = ("half", "graphs")  # on a GPU their input is float16 too
BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)  # the batch sizes `graphs` records
TOLERANCE = 1e-3  # largest change of any probability a runtime may make
CACHE_DIR = Path(os.environ.get("MODEL_CACHE_DIR", Path.home() / ".cache" / "serving-resnet50"))

Forward = Callable[[torch.Tensor], torch.Tensor]  # pixel values -> logits


class RuntimeRefused(RuntimeError):
    """A runtime that cannot run here, or would change the answers."""


class Logits(torch.nn.Module):
    """The transformers model with a plain tensor in and out, as exporters want it."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values).logits


def weights_hash(model: torch.nn.Module) -> str:
    """A short hash of the weights: the name of a converted model in the cache."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy())
    return digest.hexdigest()[:16]


def cached(folder: Path, convert: Callable[[Path], None]) -> tuple[Path, float]:
    """`folder`, converting into it first if it is not there yet; and the seconds spent.

    Conversion writes into a temporary folder that is renamed at the end, so workers
    converting at the same time never see a half-written model."""
    if folder.is_dir():
        return folder, 0.0
    folder.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    scratch = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-"))
    try:
        convert(scratch)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    try:
        scratch.rename(folder)
    except OSError:  # another process converted it first: keep theirs
        shutil.rmtree(scratch, ignore_errors=True)
    seconds = time.perf_counter() - started
    log.info("converted the model in %.1f s into %s", seconds, folder)
    return folder, seconds


def eager(model, device: torch.device) -> Forward:
    @torch.inference_mode()
    def forward(x):
        return model(x.to(device)).logits

    return forward


def channels_last(model, device: torch.device) -> Forward:
    model.to(memory_format=torch.channels_last)

    @torch.inference_mode()
    def forward(x):
        return model(x.to(device).contiguous(memory_format=torch.channels_last)).logits

    return forward


def compiled(model, device: torch.device, cache_dir: Path) -> Forward:
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_dir / "inductor"))
    model.to(memory_format=torch.channels_last)
    graph = torch.compile(Logits(model), dynamic=True)

    @torch.inference_mode()
    def forward(x):
        return graph(x.to(device).contiguous(memory_format=torch.channels_last))

    for batch_size in (2, 1):  # compile now (dynamic shapes, then the batch of one)
        forward(torch.zeros(batch_size, 3, 224, 224))
    return forward


def onnxruntime_session(model, device: torch.device, threads: int, cache_dir: Path) -> tuple:
    import onnxruntime

    def export(folder: Path) -> None:
        batch = torch.export.Dim("batch", min=1, max=256)
        torch.onnx.export(
            Logits(model).eval(), (torch.zeros(2, 3, 224, 224),), folder / "model.onnx",
            input_names=["pixel_values"], output_names=["logits"],
            dynamic_shapes={"pixel_values": {0: batch}}, dynamo=True,
        )  # fmt: skip

    folder, seconds = cached(cache_dir / f"onnx-{weights_hash(model)}", export)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    providers = ["CPUExecutionProvider"]
    if device.type == "cuda":
        if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        else:
            log.warning(
                "ONNX Runtime has no CUDA provider here (the CPU-only onnxruntime package is "
                "installed): the model runs on the CPU, not %s. Install the GPU build: "
                "pip uninstall onnxruntime && pip install onnxruntime-gpu",
                device,
            )
    session = onnxruntime.InferenceSession(str(folder / "model.onnx"), options, providers=providers)

    def forward(x):
        return torch.from_numpy(session.run(None, {"pixel_values": x.cpu().numpy()})[0])

    return forward, seconds


def openvino_model(model, threads: int, cache_dir: Path) -> tuple:
    import openvino

    def convert(folder: Path) -> None:
        example = torch.zeros(2, 3, 224, 224)
        ir = openvino.convert_model(Logits(model).eval(), example_input=example)
        ir.reshape([-1, 3, 224, 224])  # any batch size
        openvino.save_model(ir, folder / "model.xml")

    folder, seconds = cached(cache_dir / f"openvino-{weights_hash(model)}", convert)
    core = openvino.Core()
    config = {
        "INFERENCE_NUM_THREADS": threads,
        "PERFORMANCE_HINT": "LATENCY",
        # On CPUs with bfloat16 units OpenVINO would silently compute in bfloat16.
        "INFERENCE_PRECISION_HINT": "f32",
    }
    network = core.compile_model(core.read_model(folder / "model.xml"), "CPU", config)

    def forward(x):
        return torch.from_numpy(network(x.cpu().numpy())[0])

    return forward, seconds


def half(model, device: torch.device) -> Forward:
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    model.to(memory_format=torch.channels_last)

    @torch.inference_mode()
    def forward(x):
        with torch.autocast(device.type, dtype=dtype):
            return model(x.to(device).contiguous(memory_format=torch.channels_last)).logits.float()

    return forward


def bucketed(forward: Forward, buckets=BUCKETS) -> Forward:
    """`forward` for batches padded (with copies of their last image) to the next bucket
    size, so that a runtime specialised per shape sees only those; the padding's answers
    are dropped. Larger batches than the last bucket pass unpadded."""

    def padded(x: torch.Tensor) -> torch.Tensor:
        n = len(x)
        size = next((b for b in buckets if b >= n), n)
        if size > n:
            x = torch.cat([x, x[-1:].expand(size - n, *x.shape[1:])])
        return forward(x)[:n]

    return padded


def graphs(model, device: torch.device, cache_dir: Path, max_batch_size: int) -> Forward:
    if device.type != "cuda":
        raise RuntimeRefused(
            "runtime 'graphs' records CUDA graphs and needs a CUDA GPU; on this machine use "
            "eager, channels_last, compile, onnxruntime or openvino"
        )
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_dir / "inductor"))
    model.to(memory_format=torch.channels_last)
    graph = torch.compile(Logits(model), mode="reduce-overhead", dynamic=False)

    @torch.inference_mode()
    def forward(x):
        with torch.autocast("cuda", dtype=torch.float16):  # as `half`
            logits = graph(x.to(device).contiguous(memory_format=torch.channels_last))
        return logits.float().clone()  # the graph's output buffer is reused by the next replay

    forward = bucketed(forward)
    for size in [b for b in BUCKETS if b <= max_batch_size]:  # record every bucket now
        for _ in range(3):  # reduce-overhead records on the third call
            forward(torch.zeros(size, 3, 224, 224, device=device))
    return forward


def build_runtime(
    name: str,
    model: torch.nn.Module,
    device: torch.device,
    check: torch.Tensor,
    threads: int | None = None,
    cache_dir: Path | None = None,
    max_batch_size: int = BUCKETS[-1],
) -> tuple[Forward, float]:
    """The forward function of runtime `name` and the seconds spent converting (0 if the
    converted model was cached), after checking it against eager PyTorch on `check`.
    `max_batch_size`: the largest batch a server will form (`graphs` records up to it)."""
    if name not in RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, not {name!r}")
    threads = threads or torch.get_num_threads()
    cache_dir = Path(cache_dir or CACHE_DIR)
    with torch.inference_mode():
        reference = model(check.to(device)).logits.float().softmax(-1).cpu()
    seconds = 0.0
    if name == "eager":
        forward = eager(model, device)
    elif name == "channels_last":
        forward = channels_last(model, device)
    elif name == "compile":
        forward = compiled(model, device, cache_dir)
    elif name == "onnxruntime":
        forward, seconds = onnxruntime_session(model, device, threads, cache_dir)
    elif name == "openvino":
        forward, seconds = openvino_model(model, threads, cache_dir)
    elif name == "half":
        forward = half(model, device)
    else:
        started = time.perf_counter()
        forward = graphs(model, device, cache_dir, max_batch_size)
        seconds = time.perf_counter() - started
    verify(name, forward(check).float().softmax(-1).cpu(), reference)
    return forward, seconds


def verify(name: str, probabilities: torch.Tensor, reference: torch.Tensor) -> None:
    """Refuse a runtime whose answers differ from eager PyTorch's: a probability off by more
    than TOLERANCE, or another top-1 class where eager PyTorch's top-1 leads its runner-up
    by more than TOLERANCE. Where it leads by less (random weights: often), a change of
    top-1 within the tolerance is rounding, not another answer, and is not counted."""
    top2 = reference.topk(2, dim=-1).values
    clear = (top2[:, 0] - top2[:, 1]) > TOLERANCE
    changed = int((probabilities.argmax(-1) != reference.argmax(-1))[clear].sum())
    drift = float((probabilities - reference).abs().max())
    if changed or drift > TOLERANCE:
        raise RuntimeRefused(
            f"runtime {name!r} changes the answers on this machine: another top-1 class for "
            f"{changed} of the {int(clear.sum())} check images whose top-1 leads by more than "
            f"{TOLERANCE:g}, probabilities off by up to {drift:.1e} (allowed: {TOLERANCE:g}). "
            "Use another runtime."
        )
