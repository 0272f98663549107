"""Typed run configuration: dataclasses filled from YAML plus ``key=value`` overrides.

Every key is checked against the dataclass fields, so a misspelled key is an
error that names the valid keys instead of a setting that is silently ignored.
The dataclass defaults are the embedded default run, a small ViT on Fashion-MNIST
sized for a 2-core CPU (``configs/ijepa/default.yaml`` spells the same values out);
the paper recipes in ``configs/`` set every reference value explicitly.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml


class ConfigError(ValueError):
    """A configuration that cannot be used as written."""


@dataclass
class DataConfig:
    """Where images or clips come from and how they are augmented."""

    # images: "fashion-mnist" or an ImageNet-style folder with train/ (and val/ or test/);
    # planning: "trajectories" (frames of the trajectory shards in ``root``);
    # video: "moving-digits" (generated on first use) or webdataset shards (a folder with train/ and
    # val/ shard folders, a folder with manifest.json, or a brace pattern of .tar URLs)
    source: str = "fashion-mnist"
    root: str | None = None  # where Fashion-MNIST is / moving digits are generated; searched or a cache when unset
    img_size: int = 28
    crop_scale: tuple[float, float] = (0.3, 1.0)
    crop_ratio: tuple[float, float] = (0.75, 1.333)
    hflip: bool = True
    # the global batch of one optimizer step, whatever the launch: each rank's micro-batch is
    # batch_size / (processes x optim.accum_steps), so adding GPUs or nodes never changes the optimisation
    batch_size: int = 128
    num_workers: int = 0
    warn_every: int = 100  # warn once per this many corrupt images


@dataclass
class VideoConfig:
    """Clip settings, used when ``data.source`` is video (V-JEPA)."""

    num_frames: int = 16
    frame_step: int = 4
    target_fps: float | None = None  # when set, frames are taken at about this rate instead of every frame_step
    tubelet_size: int = 2
    short: Literal["pad", "skip"] = "pad"  # videos shorter than a clip: repeat the last frame, or skip them
    shuffle_buffer: int = 256
    masks: Literal["multiblock", "tube"] = "multiblock"
    short_range: tuple[int, float] = (8, 0.15)  # (blocks, spatial scale) of the first mask set
    long_range: tuple[int, float] = (2, 0.7)  # (blocks, spatial scale) of the second mask set
    tube_ratio: float = 0.9


@dataclass
class EncoderConfig:
    """The ViT context encoder (the EMA target encoder is its copy)."""

    arch: Literal["vit_tiny", "vit_small", "vit_base", "vit_large", "vit_huge", "vit_giant"] = "vit_tiny"
    patch_size: int = 4
    in_chans: int = 1
    embed_dim: int | None = None  # overrides of the named size
    depth: int | None = 6
    num_heads: int | None = None
    mlp_ratio: float | None = None


@dataclass
class PredictorConfig:
    """The narrow predictor; the reference is 384 wide and 12 deep (the paper recipes), the CPU default smaller."""

    embed_dim: int = 96
    depth: int = 4
    num_heads: int = 4
    # one pass per sample, the context shared by all target blocks (SharedContextPredictor): about half the
    # predictor FLOPs with 4 blocks, probe on par on the default run; false = the reference's pass per block
    # (the paper recipes); no saving with one target set per mask (V-JEPA); README "Performance"
    shared_context: bool = True


@dataclass
class MaskConfig:
    """Multi-block masks (reference defaults)."""

    num_targets: int = 4
    target_scale: tuple[float, float] = (0.15, 0.2)
    target_aspect: tuple[float, float] = (0.75, 1.5)
    context_scale: tuple[float, float] = (0.85, 1.0)
    context_aspect: tuple[float, float] = (1.0, 1.0)
    min_keep: int = 10
    # context tokens per image (and V-JEPA's target tokens) rounded down to a multiple of this; 'auto' = 8 on
    # images of >= 128 tokens, else 1 (README "Performance": fewer step shapes)
    token_multiple: int | Literal["auto"] = "auto"
    # every image keeps exactly this many context tokens ('auto': 64 on 14 x 14, see jepa.masks; None: the
    # batch's smallest count, as the reference), so the context encoder has one shape per step; clips take
    # only 'auto', which fixes each mask set's context and target counts (about the reference's at 24 clips)
    context_tokens: int | Literal["auto"] | None = None


@dataclass
class LossConfig:
    """Prediction loss against layer-normed targets plus VICReg-style terms."""

    kind: Literal["smooth_l1", "l1", "l2"] = "smooth_l1"
    var_coeff: float = 1.0
    cov_coeff: float = 0.04


@dataclass
class OptimConfig:
    """AdamW with warmup + cosine lr, cosine weight decay and a linear EMA ramp."""

    lr: float = 1e-3
    start_lr: float = 2e-4
    final_lr: float = 1e-6
    warmup_steps: int = 60
    weight_decay: tuple[float, float] = (0.04, 0.4)
    betas: tuple[float, float] = (0.9, 0.999)
    ema: tuple[float, float] = (0.998, 1.0)
    grad_clip: float | None = None
    accum_steps: int = 1  # micro-batches per optimizer step on each rank (gradient accumulation)
    # lr, start_lr and final_lr are given for reference_batch; "linear" / "sqrt" scale them by
    # (data.batch_size / reference_batch) or its square root, "none" uses them as written
    lr_scaling: Literal["none", "linear", "sqrt"] = "none"
    reference_batch: int = 256


@dataclass
class TrainConfig:
    """Run length, precision and how often to log and checkpoint."""

    steps: int = 600
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    log_every: int = 25
    ckpt_every: int = 250
    threads: int | None = None  # torch CPU threads; None keeps torch's choice


@dataclass
class PerfConfig:
    """Speed switches that leave the model's function unchanged (measured: README "Performance")."""

    # attention kernel: "fused" = F.scaled_dot_product_attention (flash / memory-efficient on GPU),
    # "math" = explicit softmax(QK^T)V, faster on CPU for the short sequences JEPA runs; "auto" picks by device
    attention: Literal["auto", "fused", "math"] = "auto"
    # let fused attention on GPU use cuDNN's kernel: it builds an execution plan for every new sequence length,
    # milliseconds of host time per call, and JEPA's mask sizes change every step (flash / efficient are used)
    cudnn_attention: bool = False
    fused_optimizer: bool = True  # AdamW's fused kernel (one kernel for all parameters) instead of foreach
    # fp32 linear layers on CPU through oneDNN: about 2x MKL's speed on AMD CPUs, 0.7-0.8x on an Intel Xeon;
    # "auto" times one layer both ways at start
    onednn_linear: bool | Literal["auto"] = "auto"
    # torch.compile the encoders and predictor (dynamic shapes; static where masks.context_tokens fixes them)
    compile: bool = False
    activation_checkpointing: bool = False  # recompute block activations in backward: less memory, more time
    # shared-context predictor: attention block by block (context x context, each target block x context + itself)
    # instead of one masked matrix; same function, about half the attention work; "auto": split except under bf16
    # on CPUs with AMX, where the masked pass's fewer, larger matmuls run faster
    split_attention: bool | Literal["auto"] = "auto"


@dataclass
class ProbeConfig:
    """Linear probe run at the end of training on frozen target-encoder features."""

    enabled: bool = True
    train_size: int | None = 20000  # images of the train split the probe trains on (None: all)
    epochs: int = 30
    batch_size: int = 512  # feature-extraction batch
    monitor_every: int = 0  # k-NN score of the target encoder every N steps during training (0: off)
    monitor_size: int = 2000  # train images it fits on (half as many more, also from train, are scored)
    monitor_k: int = 20


@dataclass
class WandbConfig:
    """Weights & Biases logging; ``auto`` is online with an API key, offline without."""

    mode: Literal["auto", "online", "offline", "disabled"] = "auto"
    project: str = "jepa"
    name: str | None = None


@dataclass
class Config:
    """One run."""

    run_dir: str | None = None  # default: a new folder under runs/
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    video: VideoConfig = field(default_factory=VideoConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    predictor: PredictorConfig = field(default_factory=PredictorConfig)
    masks: MaskConfig = field(default_factory=MaskConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    perf: PerfConfig = field(default_factory=PerfConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)


def two_rooms_pretrain_defaults() -> Config:
    """The encoder stage of the planning recipe: a small ViT on 65 x 65 two-channel frames, no crops or flips."""
    cfg = Config()
    cfg.data = DataConfig(source="trajectories", img_size=65, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0),
                          hflip=False, batch_size=64)
    cfg.encoder = EncoderConfig(arch="vit_tiny", patch_size=13, in_chans=2, embed_dim=64, depth=4, num_heads=4)
    cfg.predictor = PredictorConfig(embed_dim=64, depth=2, num_heads=4)
    cfg.masks = MaskConfig(num_targets=2, min_keep=4)
    cfg.train = TrainConfig(steps=400, log_every=25, ckpt_every=100, threads=1)
    cfg.optim = OptimConfig(warmup_steps=40)
    cfg.probe = ProbeConfig(enabled=False)
    cfg.wandb = WandbConfig(mode="disabled")
    return cfg


@dataclass
class CollectConfig:
    """Random-exploration trajectories (the reference's statistics)."""

    num_trajectories: int = 1000
    steps: int = 60  # actions per trajectory
    shard_size: int = 250
    kappa: float = 5.0
    door_fraction: float = 1 / 3
    held_fraction: float = 0.0  # trajectories of uniform random actions held ``hold`` steps instead
    contact_fraction: float = 0.0  # held runs that start touching the inner wall and lean into it
    outer_contact_fraction: float = 0.0  # the same against an outer wall, or a corner with the inner wall
    hold: int = 10


@dataclass
class GridPredictorConfig:
    """The local predictor (jepa.models.grid_predictor): convolutions over the token grid, FiLM by the action."""

    width: int = 32
    depth: int = 3
    kernel: int = 3
    dilation: tuple[int, ...] = ()  # one per layer (empty: all 1); wider sight at the same cost


@dataclass
class WorldModelConfig:
    """The action-conditioned predictor on frozen, layer-normed, pooled encoder features."""

    pool: int = 2  # encoder tokens average-pooled to pool x pool per frame (0: all tokens)
    frameskip: int = 5  # environment steps per predictor step (their actions are concatenated)
    window: int = 4  # frames per training clip; the transformer's rollout window (the grid predictor is Markov)
    predictor: Literal["transformer", "grid"] = "transformer"
    embed_dim: int = 64  # transformer only
    depth: int = 3  # transformer only
    num_heads: int = 4  # transformer only
    grid: GridPredictorConfig = field(default_factory=GridPredictorConfig)
    rollout_steps: int = 2  # autoregressive steps in the rollout loss
    change_weight: float = 0.0  # L1 weight on tokens that change (jepa.models.ac_predictor.change_weighted_l1)
    drift_weight: float = 0.0  # weight of a plain L1 over the rollout, every token alike: no drift where nothing moves
    steps: int = 2000
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.01
    ensemble: int = 1  # predictors trained from different seeds; their disagreement can join the cost
    # autocast dtype of the predictor's training step; "auto" is bf16 where the CPU/GPU has native bf16 (the
    # two-rooms step: 100 ms instead of 150 ms on an AMX CPU, README) and fp32 elsewhere
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    log_every: int = 100


@dataclass
class PlannerConfig:
    """CEM or MPPI with its budget; the agent replans every ``replan_every`` steps."""

    kind: Literal["cem", "mppi"] = "cem"
    samples: int = 300
    iterations: int = 3
    elites: int = 30
    horizon: int = 90
    replan_every: int = 20
    repeat: int = 10  # each sampled action is held this many steps
    init_std: float = 3.0
    action_bound: float = 1.75  # per-axis box; the environment also clips the norm to 2.45
    temperature: float = 0.5  # MPPI only
    cost: Literal["final", "summed"] = "final"
    until_episode_end: bool = True  # energy at the episode's last step once it is within the horizon
    disagreement: float = 0.0  # weight of the ensemble's disagreement in the cost
    blur: tuple[int, ...] = (1,)  # box-blur sizes of the token grid summed in the energy
    # look further when stuck: where no plan at ``horizon`` ends with an energy at least ``stuck_margin`` (a
    # fraction) below standing still, plan again at this longer horizon (0: never); a wall between the dot and
    # the goal with the door further than ``horizon`` steps is such a place
    stuck_horizon: int = 0
    stuck_margin: float = 0.05
    # also look further where the last executed plan did not keep its promise: it was to end ``stuck_margin``
    # below standing still, yet the real state's energy of standing still has not fallen by that margin
    check_progress: bool = False
    # where the real state's energy of standing still has not fallen ``stuck_margin`` since the last call, remember
    # the state as a stall; later plans pay stall_penalty * relu(E_k - d(end, stall_k)) for ending near one (0: off)
    stall_penalty: float = 0.0
    # the dtype the learned model imagines in ("auto": bf16 where this CPU runs it clearly faster, as for
    # training, jepa.precision); the energy and the start and goal features stay fp32
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    seed: int = 0


@dataclass
class PlanEvalConfig:
    """Which episodes the evaluation plays: a JSON file, or ``n`` drawn by reset(seed + i)."""

    episodes: str | None = None  # None with seed None: the 20 pinned episodes shipped with jepa
    seed: int | None = None
    n: int = 20
    gif: bool = True
    max_horizon: int = 32  # rollout-error curve up to this many predictor steps


@dataclass
class PlanConfig:
    """The two-rooms planning recipe: collect -> pretrain encoder -> train predictor -> evaluate."""

    run_dir: str | None = None
    seed: int = 0
    threads: int = 1
    collect: CollectConfig = field(default_factory=CollectConfig)
    pretrain: Config = field(default_factory=two_rooms_pretrain_defaults)
    world_model: WorldModelConfig = field(default_factory=WorldModelConfig)
    planner: PlannerConfig = field(default_factory=PlannerConfig)
    eval: PlanEvalConfig = field(default_factory=PlanEvalConfig)


def load_plan_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> PlanConfig:
    """A PlanConfig from its defaults, a YAML file and ``key=value`` overrides (unknown keys rejected)."""
    cfg = _filled(PlanConfig(), path, overrides)
    validate(cfg.pretrain)
    w, p = cfg.world_model, cfg.planner
    checks = [
        (cfg.collect.num_trajectories >= 1 and cfg.collect.steps >= 1, "collect sizes must be >= 1"),
        (0 <= cfg.collect.held_fraction <= 1 and cfg.collect.hold >= 1, "collect: held_fraction in [0, 1], hold >= 1"),
        (0 <= cfg.collect.contact_fraction <= 1 - cfg.collect.held_fraction,
         f"collect.contact_fraction ({cfg.collect.contact_fraction}) must be in [0, 1 - held_fraction "
         f"({cfg.collect.held_fraction})]: both take their share of the trajectories"),
        (0 <= cfg.collect.outer_contact_fraction <= 1 - cfg.collect.held_fraction - cfg.collect.contact_fraction,
         f"collect.outer_contact_fraction ({cfg.collect.outer_contact_fraction}) must be in [0, 1 - held_fraction "
         f"({cfg.collect.held_fraction}) - contact_fraction ({cfg.collect.contact_fraction})]: each takes its share "
         f"of the trajectories"),
        (cfg.collect.steps >= w.frameskip * w.window, "collect.steps must cover frameskip x window steps"),
        (w.frameskip >= 1 and w.window >= 2 and w.ensemble >= 1, "world_model: frameskip >= 1, window >= 2, ensemble >= 1"),
        (p.disagreement == 0 or w.ensemble > 1, "planner.disagreement needs world_model.ensemble > 1"),
        (w.change_weight >= 0 and w.drift_weight >= 0, "world_model.change_weight and drift_weight must be >= 0"),
        (w.drift_weight == 0 or w.rollout_steps > 0, "world_model.drift_weight needs rollout_steps > 0"),
        (not w.grid.dilation or (len(w.grid.dilation) == w.grid.depth and min(w.grid.dilation) >= 1),
         f"world_model.grid.dilation {list(w.grid.dilation)} needs one value >= 1 per layer (depth {w.grid.depth})"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    validate_planner(p)
    return cfg


def validate_planner(p: PlannerConfig) -> None:
    """The planner's own constraints; also checked where a planner config is edited after loading
    (``python -m eval.planning --horizon ...`` overrides a run's saved planner)."""
    checks = [
        (1 <= p.replan_every <= p.horizon, f"planner.replan_every ({p.replan_every}) must be in [1, planner.horizon "
                                           f"({p.horizon})]"),
        (p.stuck_horizon == 0 or p.stuck_horizon > p.horizon,
         f"planner.stuck_horizon ({p.stuck_horizon}) must exceed planner.horizon ({p.horizon}), or be 0 (never look "
         "further)"),
        (0 <= p.stuck_margin < 1, "planner.stuck_margin must be in [0, 1)"),
        (not p.check_progress or p.stuck_horizon > 0, "planner.check_progress needs planner.stuck_horizon > 0"),
        (p.stall_penalty >= 0, f"planner.stall_penalty must be >= 0, got {p.stall_penalty}"),
        (bool(p.blur) and all(b >= 1 and b % 2 for b in p.blur), "planner.blur sizes must be odd and >= 1"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert where YAML is looser (lists -> tuples, ints -> floats)."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: {value!r} does not fit {tp}")
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{key}: {value!r} is not one of {list(choices)}")
        return value
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:  # tuple[T, ...]: any length
            if not isinstance(value, (list, tuple)):
                raise ConfigError(f"{key}: expected a list, got {value!r}")
            return tuple(_convert(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{key}: expected a list of {len(args)} values, got {value!r}")
        return tuple(_convert(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if tp is float:
        if isinstance(value, str):  # PyYAML reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported type {tp}")


def _merge(obj: Any, updates: dict[str, Any], prefix: str = "") -> None:
    """Apply a nested dict onto a config dataclass in place, rejecting unknown keys."""
    hints = typing.get_type_hints(type(obj))
    valid = [f.name for f in dataclasses.fields(obj)]
    for name, value in updates.items():
        key = f"{prefix}{name}"
        if name not in valid:
            raise ConfigError(f"unknown config key '{key}'; valid keys here: {', '.join(valid)}")
        current = getattr(obj, name)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{key}: expected a section (mapping), got {value!r}")
            _merge(current, value, prefix=f"{key}.")
        else:
            setattr(obj, name, _convert(value, hints[name], key))


def parse_override(text: str) -> dict[str, Any]:
    """Turn ``a.b=value`` (value parsed as YAML) into ``{"a": {"b": value}}``."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value")
    key, raw = text.split("=", 1)
    if not key:
        raise ConfigError(f"override {text!r} has no key")
    nested: dict[str, Any] = {}
    node = nested
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = yaml.safe_load(raw) if raw else None
    return nested


def _filled(cfg: Any, path: str | Path | None, overrides: list[str] | tuple[str, ...]) -> Any:
    """``cfg`` (defaults) merged with the YAML file at ``path``, then with each ``key=value`` override."""
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
        _merge(cfg, data)
    for text in overrides:
        _merge(cfg, parse_override(text))
    return cfg


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Build a Config from the defaults, then a YAML file, then ``key=value`` overrides."""
    cfg = _filled(Config(), path, overrides)
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    """Reject values that type-check but cannot work, before any work starts."""
    checks = [
        (cfg.train.steps >= 1, "train.steps must be >= 1"),
        (cfg.train.log_every >= 1 and cfg.train.ckpt_every >= 1, "train.log_every and train.ckpt_every must be >= 1"),
        (cfg.data.batch_size >= 1, "data.batch_size must be >= 1"),
        (cfg.optim.accum_steps >= 1, "optim.accum_steps must be >= 1"),
        (cfg.data.batch_size % cfg.optim.accum_steps == 0, "data.batch_size must be divisible by optim.accum_steps"),
        (cfg.data.img_size % cfg.encoder.patch_size == 0, "data.img_size must be a multiple of encoder.patch_size"),
        (0 < cfg.data.crop_scale[0] <= cfg.data.crop_scale[1] <= 1, "data.crop_scale must satisfy 0 < lo <= hi <= 1"),
        (cfg.video.num_frames % cfg.video.tubelet_size == 0, "video.num_frames must be a multiple of video.tubelet_size"),
        (cfg.video.frame_step >= 1, "video.frame_step must be >= 1"),
        (cfg.probe.monitor_every >= 0, "probe.monitor_every must be >= 0 (0 turns the monitor off)"),
        (cfg.optim.warmup_steps >= 0, "optim.warmup_steps must be >= 0"),
        (cfg.optim.reference_batch >= 1, "optim.reference_batch must be >= 1"),
        (cfg.loss.var_coeff >= 0 and cfg.loss.cov_coeff >= 0, "loss coefficients must be >= 0"),
        (cfg.masks.token_multiple == "auto" or cfg.masks.token_multiple >= 1,
         "masks.token_multiple must be 'auto' or >= 1"),
        (cfg.masks.context_tokens in (None, "auto") or cfg.masks.context_tokens >= cfg.masks.min_keep,
         "masks.context_tokens must be 'auto', null or >= masks.min_keep"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def to_dict(cfg: Config) -> dict[str, Any]:
    """Plain nested dict (tuples as lists) for YAML, JSON and checkpoints."""

    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return plain(dataclasses.asdict(cfg))


def update_from_dict(obj: Any, data: dict[str, Any]) -> None:
    """Apply a nested dict (or parsed ``key=value`` overrides) onto any config dataclass, keys checked."""
    _merge(obj, data)


def plan_config_from_dict(data: dict[str, Any]) -> PlanConfig:
    """Inverse of :func:`to_dict` for a PlanConfig."""
    cfg = PlanConfig()
    _merge(cfg, data)
    return cfg


def from_dict(data: dict[str, Any]) -> Config:
    """Inverse of :func:`to_dict`, with the same key checking as YAML."""
    cfg = Config()
    _merge(cfg, data)
    return cfg


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
