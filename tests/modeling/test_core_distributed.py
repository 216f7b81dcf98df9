"""Two CPU processes (gloo): gathered CLS rows make SGD and SAM equal their full-batch values.

SAM also divides by the global prototype count, so the mean of the two rank losses (what DDP
optimises) is the single-process loss over all prototypes of the global batch.

Rank 0 holds images 0..1 and rank 1 holds images 2..4 of one global batch of five, so the row
counts differ and rank 1's offset is 2. Every process builds the same global tensors from a fixed
seed and keeps its own rows; the single-process references are computed in the pytest process.
"""

from __future__ import annotations

import math
import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from chimeraseg.modeling.losses import SAMLoss, TrainingOutputs
from chimeraseg.modeling.losses.selective_global_distillation import SelectiveGlobalDistillation
from chimeraseg.modeling.losses.semantic_alignment import semantic_alignment_loss
from chimeraseg.modeling.prototypes import ImagePrototypes
from chimeraseg.modeling.settings import LossSettings, SAMSettings, SGDSettings

WORLD, D, H, W, TAU, TAU_F, TAU_C = 2, 8, 3, 4, 0.07, 0.07, 0.01
ROWS = {0: [0, 1], 1: [2, 3, 4]}  # global image indices of each rank
NUM_SEEN, PROTOS_PER_IMAGE = 6, 2
DDP_PROTOS = {0: [3, 5], 1: [7]}  # seen prototypes per image: 8 on rank 0, 7 on rank 1


def _free_port() -> int:
    """A TCP port that was free a moment ago (bound to port 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _global_batch() -> dict[str, torch.Tensor]:
    """The global batch of five images, identical on every process (fixed seed).

    Returns:
        ``features`` (5, D, H, W), unit ``cls`` (5, D), ``protos`` (5·P, D) seen prototypes with
        their class ``proto_ids`` (5·P,), and ``seen_text`` (NUM_SEEN, D) unit rows.
    """
    gen = torch.Generator().manual_seed(123)
    n = sum(len(r) for r in ROWS.values())
    return {
        "features": torch.randn(n, D, H, W, generator=gen),
        "cls": F.normalize(torch.randn(n, D, generator=gen), dim=-1),
        "protos": torch.randn(n * PROTOS_PER_IMAGE, D, generator=gen),
        "proto_ids": torch.randint(0, NUM_SEEN, (n * PROTOS_PER_IMAGE,), generator=gen),
        "seen_text": F.normalize(torch.randn(NUM_SEEN, D, generator=gen), dim=-1),
    }


def _proto_rows(rows: list[int]) -> list[int]:
    """Indices into ``protos`` / ``proto_ids`` of the given images."""
    return [i * PROTOS_PER_IMAGE + j for i in rows for j in range(PROTOS_PER_IMAGE)]


def _image_prototypes(batch: dict[str, torch.Tensor], rows: list[int]) -> list[ImagePrototypes]:
    """One ``ImagePrototypes`` per image of ``rows`` (seen prototypes only, no latent ones)."""
    out = []
    for i in rows:
        idx = _proto_rows([i])
        out.append(
            ImagePrototypes(
                seen_ids=batch["proto_ids"][idx],
                seen=batch["protos"][idx],
                latent_ids=torch.zeros(0, dtype=torch.long),
                latent=torch.zeros(0, D),
            )
        )
    return out


def _ddp_inputs() -> tuple[torch.nn.Linear, torch.Tensor, torch.Tensor]:
    """A shared linear layer, the 15 inputs it maps to seen prototypes and their class ids."""
    gen = torch.Generator().manual_seed(7)
    layer = torch.nn.Linear(D, D)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(D, D, generator=gen))
        layer.bias.copy_(torch.randn(D, generator=gen))
    n = sum(sum(v) for v in DDP_PROTOS.values())
    inputs = torch.randn(n, D, generator=gen)
    return layer, inputs, torch.randint(0, NUM_SEEN, (n,), generator=gen)


def _ddp_sam(rank: int, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """SAM through the criterion on a DDP-wrapped layer: the loss and the averaged gradient."""
    from torch.nn.parallel import DistributedDataParallel

    layer, inputs, ids = _ddp_inputs()
    model = DistributedDataParallel(layer)
    start = sum(DDP_PROTOS[0]) if rank == 1 else 0
    rows = ROWS[rank]
    protos = []
    for n in DDP_PROTOS[rank]:  # one ImagePrototypes per image, n seen prototypes each
        sl = slice(start, start + n)
        seen = model(inputs[sl])  # (n, D)
        protos.append(ImagePrototypes(ids[sl], seen, torch.zeros(0, dtype=torch.long), seen[:0]))
        start += n
    protos += [ImagePrototypes(ids[:0], inputs[:0], ids[:0], inputs[:0])] * (
        len(rows) - len(protos)
    )
    outputs = TrainingOutputs(
        features=batch["features"][rows],
        cls=batch["cls"][rows],
        pseudo_labels=torch.empty(0),
        prototypes=protos,
        classifier_text=batch["seen_text"],
        seen_text=batch["seen_text"],
        logit_tau=0.07,
    )
    loss = SAMLoss(LossSettings(sam=SAMSettings(tau_f=TAU_F, tau_c=TAU_C)))(outputs, 0)
    loss.backward()  # DDP averages the gradients of the two processes
    return {"loss": loss.detach(), "grad": layer.weight.grad.clone()}


def _worker(rank: int, port: int, out_dir: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD
    )
    try:
        from chimeraseg.utils.distributed import all_gather_rows, get_rank, get_world_size

        assert (get_rank(), get_world_size()) == (rank, WORLD)
        rows = ROWS[rank]
        batch = _global_batch()
        out: dict[str, object] = {}

        # all_gather_rows: 2 rows on rank 0, 3 on rank 1, each row tagged with (rank, index).
        local = torch.tensor(
            [[rank, i, 10 * rank + i] for i in range(len(rows))], dtype=torch.float
        )
        local.requires_grad_(True)
        gathered, offset = all_gather_rows(local)
        out["gathered"], out["offset"] = gathered, offset
        out["gathered_requires_grad"] = gathered.requires_grad

        # SGD with gathered negatives; K >= h·w selects every position (noise-independent).
        features = batch["features"][rows].clone().requires_grad_(True)
        sgd = SelectiveGlobalDistillation(SGDSettings(k_init=H * W + 5, mode="none", tau=TAU))
        loss_sgd = sgd(features, batch["cls"][rows], iteration=0)
        loss_sgd.backward()
        out["loss_sgd"], out["grad_sgd"] = loss_sgd.detach(), features.grad
        local_only = sgd(features, batch["cls"][rows], iteration=0, gather=False)
        out["loss_sgd_local_only"] = local_only.detach()

        # SAM through the criterion (gathers the CLS rows itself) and directly.
        protos = _image_prototypes(batch, rows)
        for p in protos:
            p.seen.requires_grad_(True)
        sam = SAMLoss(LossSettings(sam=SAMSettings(tau_f=TAU_F, tau_c=TAU_C)))
        outputs = TrainingOutputs(
            features=features,
            cls=batch["cls"][rows],
            pseudo_labels=torch.empty(0),
            prototypes=protos,
            classifier_text=batch["seen_text"],
            seen_text=batch["seen_text"],
            logit_tau=0.07,
        )
        loss_sam = sam(outputs, 0)
        loss_sam.backward()
        out["loss_sam"] = loss_sam.detach()
        out["grad_sam"] = torch.cat([p.seen.grad for p in protos])
        all_cls, _ = all_gather_rows(batch["cls"][rows])
        pidx = _proto_rows(rows)
        out["loss_sam_direct"] = semantic_alignment_loss(
            batch["protos"][pidx],
            batch["seen_text"][batch["proto_ids"][pidx]],
            all_cls,
            tau_f=TAU_F,
            tau_c=TAU_C,
        )
        out["ddp_sam"] = _ddp_sam(rank, batch)
        torch.save(out, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _reference_sgd(batch: dict[str, torch.Tensor], rows: list[int]) -> tuple[torch.Tensor, ...]:
    """Single-process InfoNCE of ``rows`` against all five CLS tokens, written out by hand.

    With ``K >= h·w`` the pooled feature is ``softmax(Fc·Cg/√D)ᵀFc`` over every position.

    Returns:
        ``(loss, grad)``: the scalar loss and its gradient w.r.t. ``features[rows]``.
    """
    features = batch["features"].clone().requires_grad_(True)
    cls = batch["cls"]
    tokens = features.flatten(2).transpose(1, 2)  # (5, h·w, D)
    weights = torch.softmax(torch.einsum("bnd,bd->bn", tokens, cls) / math.sqrt(D), dim=1)
    pooled = torch.einsum("bn,bnd->bd", weights, tokens)  # (5, D)
    logits = F.normalize(pooled, dim=-1) @ F.normalize(cls, dim=-1).t() / TAU  # (5, 5)
    log_prob = F.log_softmax(logits[rows], dim=1)  # (n_rank, 5): negatives from every rank
    loss = -log_prob[torch.arange(len(rows)), torch.tensor(rows)].mean()
    loss.backward()
    return loss.detach(), features.grad[rows]


def test_gathered_cls_gives_full_batch_sgd_and_sam(tmp_path) -> None:
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    results = {r: torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)}
    batch = _global_batch()

    # all_gather_rows: variable row counts, rank order, per-rank offset, no gradient.
    expected_rows = torch.tensor(
        [[0, 0, 0], [0, 1, 1], [1, 0, 10], [1, 1, 11], [1, 2, 12]], dtype=torch.float
    )
    for rank, res in results.items():
        assert torch.equal(res["gathered"], expected_rows)
        assert res["offset"] == ROWS[rank][0]
        assert res["gathered_requires_grad"] is False

    # SGD: each rank equals the full-batch InfoNCE of its own rows (value and gradient).
    per_rank = {}
    for rank, res in results.items():
        loss, grad = _reference_sgd(batch, ROWS[rank])
        per_rank[rank] = loss
        torch.testing.assert_close(res["loss_sgd"], loss, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(res["grad_sgd"], grad, rtol=1e-4, atol=1e-6)
        # The other rank's CLS tokens really enter as negatives.
        assert not torch.allclose(res["loss_sgd_local_only"], loss, rtol=1e-3, atol=1e-4)
    # Row-weighted mean of the rank losses = the module on the whole batch in one process.
    single = SelectiveGlobalDistillation(SGDSettings(k_init=H * W + 5, mode="none", tau=TAU))
    whole = single(batch["features"], batch["cls"], iteration=0)
    n0, n1 = len(ROWS[0]), len(ROWS[1])
    torch.testing.assert_close((n0 * per_rank[0] + n1 * per_rank[1]) / (n0 + n1), whole)

    # SAM: the gathered CLS rows and the global prototype count give the single-process loss
    # over the whole batch as the mean of the rank losses, and its gradient as DDP's average.
    protos = batch["protos"].clone().requires_grad_(True)
    text = batch["seen_text"][batch["proto_ids"]]
    expected = semantic_alignment_loss(protos, text, batch["cls"], tau_f=TAU_F, tau_c=TAU_C)
    expected.backward()
    mean_of_ranks = sum(res["loss_sam"] for res in results.values()) / WORLD
    torch.testing.assert_close(mean_of_ranks, expected.detach(), rtol=1e-5, atol=1e-6)
    for rank, res in results.items():
        pidx = _proto_rows(ROWS[rank])
        torch.testing.assert_close(res["grad_sam"] / WORLD, protos.grad[pidx], rtol=1e-4, atol=1e-7)
        # The direct call (local mean, no normaliser) averages over the rank's prototypes only.
        local_mean = semantic_alignment_loss(
            batch["protos"][pidx], text[pidx], batch["cls"], tau_f=TAU_F, tau_c=TAU_C
        )
        torch.testing.assert_close(res["loss_sam_direct"], local_mean)
        local_cls = batch["cls"][ROWS[rank]]
        local = semantic_alignment_loss(
            batch["protos"][pidx], text[pidx], local_cls, tau_f=TAU_F, tau_c=TAU_C
        )
        assert not torch.allclose(local, local_mean, rtol=1e-3, atol=1e-4)
    # The per-rank local means would not average to the global mean (4 vs 6 prototypes).
    means = sum(res["loss_sam_direct"] for res in results.values()) / WORLD
    assert not torch.allclose(means, expected.detach(), rtol=1e-4, atol=1e-5)

    # SAM under DDP, 8 and 7 prototypes: the averaged gradient of a shared layer and the mean
    # of the rank losses equal one process on the global batch.
    layer, inputs, ids = _ddp_inputs()
    whole_sam = semantic_alignment_loss(
        layer(inputs), batch["seen_text"][ids], batch["cls"], tau_f=TAU_F, tau_c=TAU_C
    )
    whole_sam.backward()
    ddp = [results[r]["ddp_sam"] for r in range(WORLD)]
    torch.testing.assert_close((ddp[0]["loss"] + ddp[1]["loss"]) / WORLD, whole_sam.detach())
    for res in ddp:
        torch.testing.assert_close(res["grad"], layer.weight.grad, rtol=1e-4, atol=1e-6)
