"""GPU switches on the CPU: keys and defaults, the CUDA-only fallbacks, exact uint8 / compact-label
transfers, channels-last and in-place compilation keeping the checkpoint keys."""

from __future__ import annotations

import numpy as np
import pytest
from chimeraseg_test_utils import DETECTRON2_SKIP_REASON

pytest.importorskip("detectron2", reason=DETECTRON2_SKIP_REASON)

import torch  # noqa: E402
from chimeraseg_test_utils import SYNTHETIC_CONFIG  # noqa: E402

from chimeraseg.d2 import gpu_switches  # noqa: E402
from chimeraseg.d2.config import get_chimeraseg_cfg  # noqa: E402

pytestmark = pytest.mark.detectron2


@pytest.fixture
def torch_flags():
    """Restores the process-wide flags a test of :func:`apply_gpu_switches` changes."""
    saved = (
        torch.get_float32_matmul_precision(),
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.allow_tf32,
    )
    yield
    torch.set_float32_matmul_precision(saved[0])
    torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32 = saved[1:]


def _fake_cuda(monkeypatch, opts: list[str]):
    """A config on ``cuda`` in a process that believes CUDA is available."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    return get_chimeraseg_cfg(None, ["MODEL.DEVICE", "cuda", *opts])


def test_switch_keys_exist_with_their_documented_defaults() -> None:
    cfg = get_chimeraseg_cfg()
    assert cfg.FLOAT32_PRECISION == "highest"
    assert cfg.CUDNN_BENCHMARK is True
    assert cfg.SOLVER.FUSED is True
    assert cfg.DATALOADER.PIN_MEMORY is True
    assert cfg.MODEL.CHANNELS_LAST is False
    assert cfg.SOLVER.COMPILE is False
    assert cfg.METRICS_FSYNC_SECONDS == 10.0


@pytest.mark.parametrize(
    ("key", "value"), [("FLOAT32_PRECISION", "fast"), ("METRICS_FSYNC_SECONDS", "-1.0")]
)
def test_bad_switch_values_are_refused_naming_the_key(key: str, value: str) -> None:
    with pytest.raises(ValueError, match=key):
        get_chimeraseg_cfg(None, [key, value])


def test_cpu_runs_keep_torch_flags_and_the_plain_optimizer(torch_flags) -> None:
    from chimeraseg.d2.trainer import build_optimizer

    torch.set_float32_matmul_precision("highest")
    cfg = get_chimeraseg_cfg(None, ["MODEL.DEVICE", "cpu", "FLOAT32_PRECISION", "medium"])
    gpu_switches.apply_gpu_switches(cfg)
    assert torch.get_float32_matmul_precision() == "highest"  # CPU kernels stay float32
    assert gpu_switches.fused_optimizer_kwargs(cfg) == {}
    assert gpu_switches.pin_memory(cfg) is False
    optimizer = build_optimizer(cfg, torch.nn.Linear(3, 2))
    assert not optimizer.defaults.get("fused")
    for value in ("ADAMW", "SGD"):  # the fallback steps on the CPU
        cfg.SOLVER.OPTIMIZER = value
        model = torch.nn.Linear(3, 2)
        optimizer = build_optimizer(cfg, model)
        model(torch.ones(1, 3)).sum().backward()
        before = model.weight.detach().clone()
        optimizer.step()
        assert not torch.equal(before, model.weight)


@pytest.mark.parametrize(
    ("precision", "matmul", "cudnn_tf32"),
    [("highest", "highest", False), ("high", "high", True), ("medium", "medium", True)],
)
def test_cuda_float32_precision_sets_matmul_and_cudnn(
    monkeypatch, torch_flags, precision: str, matmul: str, cudnn_tf32: bool
) -> None:
    cfg = _fake_cuda(monkeypatch, ["FLOAT32_PRECISION", precision])
    gpu_switches.apply_gpu_switches(cfg)
    assert torch.get_float32_matmul_precision() == matmul
    assert torch.backends.cudnn.allow_tf32 is cudnn_tf32
    assert torch.backends.cudnn.benchmark is True


def test_determinism_keeps_cudnn_benchmark_off(monkeypatch, torch_flags) -> None:
    cfg = _fake_cuda(monkeypatch, ["DETERMINISTIC", "True", "CUDNN_BENCHMARK", "True"])
    gpu_switches.apply_gpu_switches(cfg)
    assert torch.backends.cudnn.benchmark is False


def test_fused_kernel_on_cuda_except_fp16_with_clipping(monkeypatch) -> None:
    assert gpu_switches.fused_optimizer_kwargs(_fake_cuda(monkeypatch, [])) == {"fused": True}
    assert gpu_switches.pin_memory(_fake_cuda(monkeypatch, [])) is True
    off = _fake_cuda(monkeypatch, ["SOLVER.FUSED", "False", "DATALOADER.PIN_MEMORY", "False"])
    assert gpu_switches.fused_optimizer_kwargs(off) == {}
    assert gpu_switches.pin_memory(off) is False
    amp = ["SOLVER.AMP.ENABLED", "True", "SOLVER.CLIP_GRADIENTS.ENABLED", "True"]
    fp16 = _fake_cuda(monkeypatch, [*amp, "SOLVER.AMP.PRECISION", "float16"])
    assert gpu_switches.fused_optimizer_kwargs(fp16) == {}  # clipping would see scaled grads
    bf16 = _fake_cuda(monkeypatch, [*amp, "SOLVER.AMP.PRECISION", "bfloat16"])
    assert gpu_switches.fused_optimizer_kwargs(bf16) == {"fused": True}


def test_train_loader_is_asked_to_pin_memory_only_on_cuda(monkeypatch, tiny_opts, synthetic_root):
    from chimeraseg.d2 import trainer as trainer_module

    seen = []
    monkeypatch.setattr(
        trainer_module,
        "build_resumable_train_loader",
        lambda *a, **k: seen.append(k.get("pin_memory")),
    )
    cfg = get_chimeraseg_cfg(SYNTHETIC_CONFIG, tiny_opts)
    trainer_module.ChimeraSegTrainer.build_train_loader(cfg)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    cfg.MODEL.DEVICE = "cuda"
    trainer_module.ChimeraSegTrainer.build_train_loader(cfg)
    assert seen == [False, True]


# ------------------------------------------------------------------- compact transfers, exact
@pytest.mark.parametrize(
    ("classes", "dtype"), [(12, np.uint8), (171, np.uint8), (255, np.uint8), (847, np.int16)]
)
def test_compact_label_dtype_holds_every_id_and_the_ignore_value(classes: int, dtype) -> None:
    from chimeraseg.d2.data.mapper import compact_label_dtype

    assert compact_label_dtype(classes, 255) == np.dtype(dtype)
    ids = np.array([0, classes - 1, 255], dtype=np.int64)
    assert np.array_equal(ids.astype(compact_label_dtype(classes, 255)).astype(np.int64), ids)
    with pytest.raises(ValueError, match="4294967296"):
        compact_label_dtype(847, 2**32)


def test_compact_label_dtype_widens_for_an_ignore_value_beyond_int16() -> None:
    """ADE20K-847 ignores 65535: its labels cross as int32, every id and the ignore exact."""
    from chimeraseg.d2.data.mapper import compact_label_dtype

    dtype = compact_label_dtype(847, 65535)
    assert dtype == np.dtype(np.int32)
    ids = np.array([0, 846, 65535], dtype=np.int64)
    assert np.array_equal(ids.astype(dtype).astype(np.int64), ids)


def _model(opts: list[str]):
    from detectron2.modeling import build_model

    import chimeraseg.d2  # noqa: F401

    return build_model(get_chimeraseg_cfg(SYNTHETIC_CONFIG, opts))


def _batch():
    from detectron2.data import DatasetCatalog

    from chimeraseg.d2.data import ZeroShotDatasetMapper

    cfg = get_chimeraseg_cfg(SYNTHETIC_CONFIG, ["INPUT.CROP.SIZE", "(64, 64)"])
    mapper = ZeroShotDatasetMapper(cfg, is_train=True)
    return [mapper(d) for d in DatasetCatalog.get("synthetic_zs_train")[:2]]


def _captured_inputs(model, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """The images and labels the meta-architecture hands to ``forward_train``."""
    from detectron2.utils.events import EventStorage

    captured = {}

    def forward_train(images, labels, iteration, valid=None):
        captured["images"], captured["labels"] = images, labels
        return {}

    model.model.forward_train = forward_train
    with EventStorage(0):
        model(batch)
    return captured["images"], captured["labels"]


def test_uint8_images_and_compact_labels_give_the_float_int64_inputs(tiny_opts, synthetic_root):
    model = _model(tiny_opts).train()
    batch = _batch()
    assert batch[0]["image"].dtype == torch.uint8 and batch[0]["sem_seg"].dtype == torch.uint8
    wide = [
        {**x, "image": x["image"].float(), "sem_seg": x["sem_seg"].long()} for x in batch
    ]  # what crossed to the device before: float32 images, int64 labels
    images, labels = _captured_inputs(model, batch)
    wide_images, wide_labels = _captured_inputs(model, wide)
    assert images.dtype == torch.float32 and labels.dtype == torch.int64
    assert torch.equal(images, wide_images)
    assert torch.equal(labels, wide_labels)
    assert (labels == 255).any() and set(labels.unique().tolist()) - {255}


def test_the_input_transfers_add_no_host_synchronisation(tiny_opts, synthetic_root):
    from detectron2.structures import ImageList

    from chimeraseg.utils import host_syncs as syncs

    model = _model([*tiny_opts, "MODEL.CHANNELS_LAST", "True"]).train()
    batch = _batch()
    wide = [x["image"].float() for x in batch]
    padding_only = syncs.SyncCounter()  # detectron2's padding reads the (CPU) image sizes
    with padding_only:
        ImageList.from_tensors(wide, model.size_divisibility)
        ImageList.from_tensors([x["sem_seg"] for x in batch], model.size_divisibility, 255)
    transfers = syncs.SyncCounter()
    with transfers:
        model._images(batch)
        labels = [x["sem_seg"].to(model.device, non_blocking=True) for x in batch]
        ImageList.from_tensors(labels, model.size_divisibility, pad_value=255).tensor.long()
    assert transfers.total_ops > padding_only.total_ops
    assert transfers.counts == padding_only.counts  # the uint8 transfers add none


def test_channels_last_keeps_the_training_losses(tiny_opts, synthetic_root):
    from detectron2.utils.events import EventStorage

    batch = _batch()
    losses = {}
    for channels_last in (False, True):
        torch.manual_seed(0)
        model = _model([*tiny_opts, "MODEL.CHANNELS_LAST", str(channels_last)]).train()
        convs = [m for m in model.model.backbone.modules() if isinstance(m, torch.nn.Conv2d)]
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        assert convs and all(c.weight.is_contiguous(memory_format=fmt) for c in convs)
        assert model._images(batch).tensor.is_contiguous(memory_format=fmt)
        torch.manual_seed(1)
        with EventStorage(0):
            losses[channels_last] = {k: float(v.detach()) for k, v in model(batch).items()}
    for name, value in losses[False].items():
        assert losses[True][name] == pytest.approx(value, rel=1e-4, abs=1e-5), name


def test_compiled_model_keeps_the_eager_checkpoint_keys(tiny_opts, synthetic_root, tmp_path):
    from chimeraseg.d2.trainer import ChimeraSegCheckpointer

    eager, compiled = _model(tiny_opts), _model(tiny_opts)
    names = gpu_switches.compile_training_modules(compiled)
    assert names == ["backbone", "decoder", "head", "teacher"]
    assert all(getattr(compiled.model, n)._compiled_call_impl is not None for n in names)
    keys = list(compiled.state_dict())
    assert keys == list(eager.state_dict()) and not [k for k in keys if "_orig_mod" in k]
    ChimeraSegCheckpointer(compiled, str(tmp_path)).save("model_compiled")
    saved = torch.load(tmp_path / "model_compiled.pth", weights_only=False)["model"]
    assert list(saved) == list(eager.state_dict())
    eager.load_state_dict(saved, strict=True)


def test_trainer_compiles_in_place_with_solver_compile(
    monkeypatch, tiny_opts, synthetic_root, tmp_path
):
    from chimeraseg.d2 import trainer as trainer_module

    calls = []
    monkeypatch.setattr(trainer_module, "compile_training_modules", calls.append)
    cfg = get_chimeraseg_cfg(SYNTHETIC_CONFIG, [*tiny_opts, "SOLVER.COMPILE", "True"])
    cfg.OUTPUT_DIR = str(tmp_path)
    trainer = trainer_module.ChimeraSegTrainer(cfg)
    assert calls == [trainer.model]
