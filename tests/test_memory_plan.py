"""`animlcm distill --dry-run`: the memory plan, counted on the meta device, against real tiny tensors."""

from __future__ import annotations

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from animlcm.stages.distill.config import DistillConfig
from animlcm.stages.distill.memory import GB, plan_distill, saved_activation_bytes


def _row(plan, prefix: str) -> int:
    return next(b for what, b, _ in plan.rows if what.startswith(prefix))


def _real_run(cfg):
    """The networks as trainer.run builds them, real (tiny), after one optimizer step."""
    from animlcm.models.presets import build_network
    from animlcm.stages.distill.ema import make_target
    from animlcm.stages.distill.shared_base import share_frozen_weights
    from animlcm.stages.distill.trainer import _trainable, with_heads

    teacher = build_network("tiny", face_tokens=False)
    student = with_heads(teacher, bool(cfg.face_tokens), bool(cfg.aux_head))
    _trainable(student, cfg)
    student.train()
    target = make_target(student)
    share_frozen_weights(teacher, student)
    trained = [p for p in student.parameters() if p.requires_grad]
    for p in trained:
        p.grad = torch.ones_like(p)
    optimizer = torch.optim.AdamW(trained, lr=1e-4)
    optimizer.step()
    return teacher, student, target, trained, optimizer


def test_weights_gradients_optimizer_and_target_match_real_tensors():
    cfg = DistillConfig(method="lcm", preset="tiny", batch_size=2).with_method_defaults()
    plan = plan_distill(cfg)
    teacher, student, target, trained, optimizer = _real_run(cfg)
    student_ids = {id(p) for p in student.parameters()}
    assert _row(plan, "gradients") == sum(p.grad.nbytes for p in trained)
    moments = [t for s in optimizer.state.values() for k, t in s.items() if k != "step"]
    assert _row(plan, "optimizer states") == sum(t.nbytes for t in moments)
    assert _row(plan, "EMA target") == sum(p.nbytes for p in target.parameters() if id(p) not in student_ids)
    # lcm's spatial stage: the teacher keeps its own spatial UNet, and uses the student's frozen rest
    assert _row(plan, "teacher (its own copies)") == sum(
        p.nbytes for p in teacher.parameters() if id(p) not in student_ids
    )
    students = sum(b for what, b, _ in plan.rows if what.startswith("student "))
    assert students == sum(p.nbytes for p in student.parameters())


def test_activations_traced_on_meta_equal_the_real_forward():
    """The meta trace follows attention's math path (it stores the attention probabilities), which is what
    a real CPU forward with that backend saves, byte for byte; GPU flash attention saves less."""
    from animlcm.models.presets import build_network
    from animlcm.stages.distill.trainer import _trainable, with_heads

    for stage, frames in (("spatial", 1), ("temporal", 8)):
        cfg = DistillConfig(method="lcm", preset="tiny", batch_size=2, stage=stage).with_method_defaults()
        student = with_heads(build_network("tiny", face_tokens=False), False, False)
        _trainable(student, cfg)
        student.train()
        with sdpa_kernel(SDPBackend.MATH):
            real = saved_activation_bytes(student, 2, frames, 128, 128, stage == "temporal", "cpu")
        assert _row(plan_distill(cfg), "activations") == real > 0


def test_what_each_mode_trains_shows_in_the_plan():
    base = dict(preset="tiny", batch_size=1, stage="spatial")
    full = plan_distill(DistillConfig(method="lcm", **base))
    lora = plan_distill(DistillConfig(method="animatelcm", **base))  # spatial stage: train_modules lora
    assert _row(lora, "gradients") < _row(full, "gradients") / 10
    # the temporal stage trains most of the teacher's weights: it keeps a copy of its own, in bf16 if asked
    temporal = dict(base, stage="temporal")
    whole = plan_distill(DistillConfig(method="lcm", **temporal))
    half = plan_distill(DistillConfig(method="lcm", mixed_precision="bf16", **temporal))
    assert _row(half, "teacher") * 2 == _row(whole, "teacher") > 0
    assert _row(half, "activations") * 2 == _row(whole, "activations")
    eight = plan_distill(DistillConfig(method="lcm", adam_8bit=True, **base))
    assert _row(eight, "optimizer states") * 4 == _row(full, "optimizer states")


def test_a_shared_base_plans_the_adapter_alone():
    """LoRA-only runs share the student's base with teacher and target: the plan counts the EMA adapter
    (the size of the trained LoRA) and no teacher copy; a teacher with parts the student drops gets copies."""
    base = dict(preset="tiny", batch_size=1, stage="spatial", method="animatelcm")
    shared = plan_distill(DistillConfig(**base))
    copies = plan_distill(DistillConfig(share_base=False, **base))
    assert _row(shared, "teacher") == 0
    assert _row(shared, "EMA target") == _row(shared, "gradients")  # fp32, one per trained LoRA weight
    # separate networks (--no-share-base) hold no more: they share every frozen weight with the student
    assert _row(copies, "teacher (its own copies)") == 0
    assert _row(copies, "EMA target") == _row(shared, "EMA target")
    # the real thing: the EMA adapter's tensors on a real tiny student, as trainer.run builds it
    from animlcm.models.lora import add_lora
    from animlcm.models.presets import build_network
    from animlcm.stages.distill.shared_base import EMA_ADAPTER, add_ema_adapter
    from animlcm.stages.distill.trainer import _trainable, with_heads

    cfg = DistillConfig(**base).with_method_defaults()
    student = with_heads(build_network("tiny", face_tokens=False), False, False)
    add_lora(student, rank=cfg.lora_rank)
    _trainable(student, cfg)
    before = {id(p) for p in student.parameters()}
    add_ema_adapter(student)
    added = [p for p in student.parameters() if id(p) not in before]
    assert all(f".{EMA_ADAPTER}." in n for n, p in student.named_parameters() if id(p) not in before)
    assert _row(shared, "EMA target") == sum(p.nbytes for p in added)


def test_motion_modules_are_checkpointed_with_the_rest():
    """diffusers' gradient checkpointing skips AnimateDiff's motion modules; the network's checkpoints them
    too: a temporal forward then saves less, and the gradients are the same bits."""
    import copy

    from animlcm.models.checkpointing import CheckpointedMotionModule
    from animlcm.models.presets import build_network

    net = build_network("tiny", face_tokens=False)
    motion = [m for m in net.unet.modules() if isinstance(m, CheckpointedMotionModule)]
    assert motion and not any(m.gradient_checkpointing for m in motion)
    ckpt = copy.deepcopy(net)
    ckpt.unet.enable_gradient_checkpointing()
    assert all(
        m.gradient_checkpointing for m in ckpt.unet.modules() if isinstance(m, CheckpointedMotionModule)
    )
    before = saved_activation_bytes(net.train(), 1, 8, 64, 64, True, "cpu")
    net.unet.enable_gradient_checkpointing()
    for m in net.unet.modules():
        if isinstance(m, CheckpointedMotionModule):
            m.gradient_checkpointing = False  # diffusers' own checkpointing only
    diffusers_only = saved_activation_bytes(net, 1, 8, 64, 64, True, "cpu")
    with_motion = saved_activation_bytes(ckpt.train(), 1, 8, 64, 64, True, "cpu")
    assert with_motion < diffusers_only < before

    def grads(model):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(1, 4, 4, 8, 8, generator=g)
        pose = {"skeleton": torch.rand(1, 3, 4, 64, 64, generator=g)}
        cond = model.encode_conditioning(
            torch.rand(1, 3, 64, 64, generator=g), torch.randn(1, 4, 8, 8, generator=g)
        )
        model.zero_grad()
        model(x, torch.tensor([500]), pose, cond, temporal=True).square().mean().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    a, b = grads(net), grads(ckpt)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_reference_net_that_takes_gradients_is_checkpointed_too():
    """Teacher training (spatial) trains the reference net: enable_checkpointing recomputes it in backward
    as well (its attention processors record the features again, the same values), with the same gradients."""
    import copy

    from animlcm.models.checkpointing import enable_checkpointing
    from animlcm.models.presets import build_network
    from animlcm.stages.distill.teacher_training import teacher_trainable

    net = build_network("tiny", face_tokens=True)
    teacher_trainable(net, "spatial")
    ckpt = copy.deepcopy(net)
    enable_checkpointing(ckpt)
    assert ckpt.reference_unet.is_gradient_checkpointing
    plain = copy.deepcopy(net)
    plain.unet.enable_gradient_checkpointing()  # the denoiser only, as before
    assert saved_activation_bytes(ckpt.train(), 2, 1, 64, 64, False, "cpu") < saved_activation_bytes(
        plain.train(), 2, 1, 64, 64, False, "cpu"
    )

    def grads(model):
        g = torch.Generator().manual_seed(1)
        x = torch.randn(1, 4, 1, 8, 8, generator=g)
        pose = {"skeleton": torch.rand(1, 3, 1, 64, 64, generator=g)}
        face = torch.randn(1, 4, 32, 32, generator=g)  # the face crop's VAE latent
        cond = model.encode_conditioning(
            torch.rand(1, 3, 64, 64, generator=g), torch.randn(1, 4, 8, 8, generator=g), face, torch.ones(1)
        )
        model.zero_grad()
        model(x, torch.tensor([300]), pose, cond, temporal=False).square().mean().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    a, b = grads(plain), grads(ckpt)
    assert any(k.startswith("reference_unet.") for k in a)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_cli_dry_run_prints_the_plan_and_writes_nothing(tmp_path):
    from typer.testing import CliRunner

    from animlcm.cli import app

    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["distill", "--dry-run", "--preset", "tiny", "--method", "lcm",
                                   "--out", str(out), "--gpu-memory", "0.01"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "memory plan" in res.output and "does NOT fit in 0.01 GB" in res.output
    assert not out.exists()
    plan = plan_distill(DistillConfig(method="lcm", preset="tiny"))
    assert 0 < plan.total < GB and not plan.fits(plan.total / GB * 0.99) and plan.fits(plan.total / GB)


def test_train_teacher_plans_its_own_run(tmp_path):
    """train-teacher --dry-run: weights, gradients and AdamW moments of the parts its stage trains, equal to
    real tensors at tiny size; the CLI prints the plan and writes nothing."""
    from typer.testing import CliRunner

    from animlcm.cli import app
    from animlcm.models.presets import build_network
    from animlcm.stages.distill.memory import plan_teacher
    from animlcm.stages.distill.teacher_training import TeacherTrainConfig, teacher_trainable

    for stage in ("spatial", "temporal"):
        plan = plan_teacher(TeacherTrainConfig(preset="tiny", stage=stage, batch_size=1))
        net = build_network("tiny", face_tokens=True)
        teacher_trainable(net, stage)
        trained = [p for p in net.parameters() if p.requires_grad]
        assert _row(plan, "gradients") == sum(p.nbytes for p in trained)
        assert _row(plan, "optimizer states") == 2 * sum(p.nbytes for p in trained)
        weights = sum(b for what, b, _ in plan.rows if what.startswith("teacher "))
        assert weights == sum(p.nbytes for p in net.parameters())
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["train-teacher", "--dry-run", "--preset", "tiny", "--out", str(out),
                                   "--gpu-memory", "80"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "train-teacher / spatial" in res.output and "fits in 80 GB" in res.output and not out.exists()


def test_a_zero2_plan_shares_gradients_and_optimizer_states_and_adds_the_buckets():
    """One process of a ZeRO-2 run over N holds 1/N of the gradients and AdamW moments, plus the engine's two
    buckets of the size the run configures (``zero.configure``), capped at the trained size."""
    from types import SimpleNamespace

    from animlcm.stages.distill import zero

    cfg = DistillConfig(method="lcm", preset="tiny", batch_size=1, stage="spatial")
    whole, shared = plan_distill(cfg), plan_distill(cfg, zero_processes=4)
    for row in ("gradients", "optimizer states"):
        assert _row(shared, row) == _row(whole, row) // 4
    trained = _row(whole, "gradients") // 4  # fp32 gradients: the trained count
    assert _row(shared, "ZeRO-2 buckets") == 2 * min(trained, zero.BUCKET_ELEMENTS) * 4
    assert _row(shared, "activations") == _row(whole, "activations")
    accelerator = SimpleNamespace(
        state=SimpleNamespace(deepspeed_plugin=SimpleNamespace(deepspeed_config={})), num_processes=1
    )
    settings = SimpleNamespace(batch_size=1, grad_accum=1, grad_clip=1.0, mixed_precision="no")
    zero.configure(accelerator, settings)
    buckets = accelerator.state.deepspeed_plugin.deepspeed_config["zero_optimization"]
    assert buckets["reduce_bucket_size"] == buckets["allgather_bucket_size"] == zero.BUCKET_ELEMENTS


def test_an_fsdp_plan_shards_every_network_and_adds_what_is_gathered_at_once():
    """One process of an FSDP run over N holds 1/N of every network (the target and teacher whole networks
    of their own, fp32), of the gradients and of the AdamW moments, plus the gathered weights: the reference
    UNet whole where gradients reach it (a face projector trains), otherwise a few layers."""
    from animlcm.models.presets import empty_network, network_config

    for method in ("lcm", "dancelcm"):
        cfg = DistillConfig(method=method, preset="tiny", batch_size=1, stage="spatial")
        whole, sharded = plan_distill(cfg), plan_distill(cfg, fsdp_processes=4)
        for row in ("gradients", "optimizer states", "student unet", "student reference_unet"):
            assert _row(sharded, row) == _row(whole, row) // 4
        students = sum(b for what, b, _ in whole.rows if what.startswith("student "))
        assert abs(_row(sharded, "EMA target") - students // 4) <= 8  # (each part rounded down alone)
        assert _row(sharded, "activations") == _row(whole, "activations")
        reference = sum(
            p.numel() * 4 for p in empty_network(network_config("tiny")).reference_unet.parameters()
        )
        gathered = _row(sharded, "gathered weights")
        assert (gathered > reference) == (method == "dancelcm"), (method, gathered, reference)
        assert gathered < students
        assert sharded.total < whole.total


def test_the_plan_counts_only_the_copies_target_and_teacher_own():
    """AnimateLCM's temporal stage (motion modules trained): the planned target and teacher rows are the
    bytes of the tensors a real tiny build gives them of their own, the rest being the student's."""
    from animlcm.models.lora import add_lora
    from animlcm.models.presets import build_network
    from animlcm.stages.distill.ema import ema_names, make_target
    from animlcm.stages.distill.shared_base import share_frozen_weights
    from animlcm.stages.distill.trainer import _trainable, with_heads

    cfg = DistillConfig(
        method="animatelcm", stage="temporal", preset="tiny", batch_size=1
    ).with_method_defaults()
    assert cfg.train_modules == "motion" and cfg.lora_init_strategy
    plan = plan_distill(cfg)
    teacher = build_network("tiny", face_tokens=False)
    student = with_heads(teacher, False, False)
    add_lora(student, rank=cfg.lora_rank, layers=cfg.lora_layers)
    _trainable(student, cfg)
    lora = [n for n, _ in student.named_parameters() if "lora_" in n]
    target = make_target(student, ema_names(student, extra=lora))
    assert share_frozen_weights(teacher, student) > 0
    mine = {id(p) for p in student.parameters()}

    def own(net):
        return sum(p.nbytes for p in net.parameters() if id(p) not in mine)

    assert _row(plan, "EMA target") == own(target) > 0
    assert _row(plan, "teacher (its own copies)") == own(teacher) > 0
    motion = sum(p.nbytes for n, p in teacher.named_parameters() if "motion_modules" in n)
    assert own(teacher) == motion  # the teacher keeps its motion modules, which the student trains
