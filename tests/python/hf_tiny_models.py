"""Tiny random Hugging Face MoE models for cross-checking `switchyard forward`.

Helper for tests/python/test_transformers_crosscheck.py.  Everything here is
reference-side only: it builds tiny random models with transformers (5.x),
writes them to disk in the checkpoint layouts switchyard must read, and
computes the reference output of one MoE block with transformers itself.

Checkpoint layouts (observed with transformers 5.24.0, torch 2.15 CPU):

  transformers 5.x keeps the experts *fused* in memory (``<blk>.experts.gate_up_proj``
  [E, 2I, H], gate rows first, and ``<blk>.experts.down_proj`` [E, H, I]), but
  ``save_pretrained`` reverts the weight conversion (transformers/conversion_mapping.py,
  "mixtral" and "qwen2_moe" entries; deepseek_v3 and qwen3_moe reuse "qwen2_moe")
  and writes the legacy *per-expert* layout for the first four architectures:

    mixtral     model.layers.L.block_sparse_moe.gate.weight                [E, H]
                model.layers.L.block_sparse_moe.experts.E.w1.weight        [I, H]  (gate)
                model.layers.L.block_sparse_moe.experts.E.w3.weight        [I, H]  (up)
                model.layers.L.block_sparse_moe.experts.E.w2.weight        [H, I]  (down)
    qwen2_moe   model.layers.L.mlp.gate.weight                             [E, H]
                model.layers.L.mlp.experts.E.{gate,up}_proj.weight         [I, H]
                model.layers.L.mlp.experts.E.down_proj.weight              [H, I]
                model.layers.L.mlp.shared_expert.{gate,up,down}_proj.weight
                model.layers.L.mlp.shared_expert_gate.weight               [1, H]
    qwen3_moe   model.layers.L.mlp.gate.weight, model.layers.L.mlp.experts.E.{gate,up,down}_proj.weight
    deepseek_v3 model.layers.L.mlp.gate.weight                             [E, H]
                model.layers.L.mlp.gate.e_score_correction_bias            [E]
                model.layers.L.mlp.experts.E.{gate,up,down}_proj.weight
                model.layers.L.mlp.shared_experts.{gate,up,down}_proj.weight  [n_shared*I, H] / [H, n_shared*I]
    olmoe       as qwen3_moe;  glm4_moe as deepseek_v3;  qwen3_5_moe_text as qwen2_moe
    qwen3_5_moe the multimodal model: as qwen2_moe under model.language_model.layers.L.mlp.
    granitemoe  model.layers.L.block_sparse_moe.router.layer.weight        [E, H]
                model.layers.L.block_sparse_moe.input_linear.weight        [E, 2I, H]  (gate rows first)
                model.layers.L.block_sparse_moe.output_linear.weight       [E, H, I]
                (its own fused names; in memory router.weight, experts.gate_up_proj,
                experts.down_proj.  Granite has no per-expert tensors, so its "per_expert"
                layout below means the names save_pretrained writes.)
    llama4_text model.layers.L.feed_forward.router.weight                  [E, H]
                model.layers.L.feed_forward.experts.gate_up_proj           [E, H, 2I]  (gate columns first)
                model.layers.L.feed_forward.experts.down_proj              [E, I, H]
                model.layers.L.feed_forward.shared_expert.{gate,up,down}_proj.weight
                (one layout, in memory and on disk; the multimodal llama4 under
                language_model.model.layers.)

  config.json expert-count key as written by transformers 5.24: mixtral
  ``num_local_experts``, qwen2_moe ``num_experts``, deepseek_v3 ``n_routed_experts``,
  and qwen3_moe ``num_local_experts`` (Qwen3MoeConfig.attribute_map maps num_experts
  to num_local_experts, so the released-checkpoint key ``num_experts`` is absent).

  The fused layout is therefore produced here by rewriting the saved file
  (``convert_layout``), and checked against the model's own in-memory state dict.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import json
import os
import re
import shutil
from typing import Any

import numpy as np
import torch
import transformers
from safetensors import safe_open
from safetensors.torch import load_file, save_file

T_TOKENS = 37  # not divisible by 2, 3 or 4
WEIGHT_STD = 0.2
# DeepSeek e_score_correction_bias ~ U[-BIAS_RANGE, BIAS_RANGE].  DeepSeek's
# reference masks dropped groups with -inf; older transformers filled 0.0 (the
# installed 5.x also uses -inf, modeling_deepseek_v3.py DeepseekV3TopkRouter).  The
# two only differ if a selected candidate's biased score were negative; sigmoid
# scores lie in (0, 1) and with |bias| <= 0.05 the top-k biased scores are
# positive (checked in routing_margins), so both conventions agree here.
BIAS_RANGE = 0.05
# x is regenerated until every routing decision (top-k cut, DeepSeek group cut)
# has at least this gap, so float32 reordering cannot flip an expert choice.
MIN_ROUTING_GAP = 1e-4


@dataclasses.dataclass(frozen=True)
class Arch:
    """What the cross-check needs to know of one transformers architecture."""
    config_class: str
    family: str  # "softmax": softmax top-k | "deepseek": sigmoid, selection bias, groups, scaling
    #              | "sigmoid_topk": top-k logits, their sigmoids (Llama 4)
    renormalize: bool | None  # top-k weights renormalised; None: config's norm_topk_prob
    proj: tuple[str, str, str] | None  # per-expert (gate, up, down) names; None: fused on disk (granite)
    shared: str | None = None  # the shared expert's module: "shared_expert" | "shared_experts" | None
    shared_gated: bool = False  # shared_expert_gate (sigmoid) on its output
    block: str = "mlp"  # the decoder layer's MoE module
    router: str = "gate"  # the block's router module
    model_class: str = "AutoModelForCausalLM"
    decoder: str = "model.layers"  # checkpoint name prefix of the decoder layers
    scales_input: bool = False  # the routing weight scales the expert's input (Llama 4)
    single_layout: bool = False  # one expert layout only (Llama 4: fused, transposed)


_GUD = ("gate_proj", "up_proj", "down_proj")
ARCHS: dict[str, Arch] = {
    "mixtral": Arch("MixtralConfig", "softmax", True, ("w1", "w3", "w2")),
    "qwen2_moe": Arch("Qwen2MoeConfig", "softmax", None, _GUD, "shared_expert", shared_gated=True),
    "qwen3_moe": Arch("Qwen3MoeConfig", "softmax", None, _GUD),
    "deepseek_v3": Arch("DeepseekV3Config", "deepseek", None, _GUD, "shared_experts"),
    "olmoe": Arch("OlmoeConfig", "softmax", None, _GUD),
    # GraniteMoeTopKRouter: softmax over the top-k logits = renormalised softmax top-k.
    "granitemoe": Arch("GraniteMoeConfig", "softmax", True, None, block="block_sparse_moe", router="router"),
    "glm4_moe": Arch("Glm4MoeConfig", "deepseek", None, _GUD, "shared_experts"),
    "qwen3_5_moe_text": Arch("Qwen3_5MoeTextConfig", "softmax", True, _GUD, "shared_expert", shared_gated=True),
    # The multimodal checkpoint: its language model's tensors under model.language_model.
    "qwen3_5_moe": Arch("Qwen3_5MoeConfig", "softmax", True, _GUD, "shared_expert", shared_gated=True,
                        model_class="Qwen3_5MoeForConditionalGeneration", decoder="model.language_model.layers"),
    # Llama 4: experts fused and transposed (gate_up_proj [E, H, 2I], down_proj [E, I, H]) in
    # memory and on disk; E(sigmoid(logit) * x); an ungated shared expert.
    "llama4_text": Arch("Llama4TextConfig", "sigmoid_topk", False, None, "shared_expert", block="feed_forward",
                        router="router", scales_input=True, single_layout=True),
    "llama4": Arch("Llama4Config", "sigmoid_topk", False, None, "shared_expert", block="feed_forward",
                   router="router", scales_input=True, single_layout=True,
                   model_class="Llama4ForConditionalGeneration", decoder="language_model.model.layers"),
}


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    arch: str  # a key of ARCHS
    layer: int  # the MoE layer under test
    moe_layers: tuple[int, ...]  # every MoE layer of the model (asserted)
    config: dict[str, Any]
    seed: int

    @property
    def a(self) -> Arch:
        return ARCHS[self.arch]

    @property
    def text(self) -> dict[str, Any]:
        """The decoder's config (a multimodal config's text_config)."""
        return self.config.get("text_config", self.config)

    @property
    def num_experts(self) -> int:
        t = self.text
        return t.get("num_local_experts") or t.get("num_experts") or t["n_routed_experts"]

    @property
    def inter(self) -> int:
        return self.text.get("moe_intermediate_size") or self.text["intermediate_size"]


_COMMON = dict(vocab_size=64, hidden_size=32, max_position_embeddings=128, tie_word_embeddings=False)
_QWEN3_5_TEXT = dict(_COMMON, moe_intermediate_size=16, shared_expert_intermediate_size=24, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, head_dim=8, linear_key_head_dim=8,
                     linear_value_head_dim=8, linear_num_key_heads=2, linear_num_value_heads=4,
                     layer_types=["linear_attention", "full_attention"], num_experts=8, num_experts_per_tok=2)
_LLAMA4_TEXT = dict(_COMMON, intermediate_size=16, intermediate_size_mlp=40, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=8, num_local_experts=8,
                    num_experts_per_tok=1, interleave_moe_layer_step=2)

VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in [
        # Mixtral: every layer is MoE; softmax over all experts, top-2, renormalised.
        Variant(
            "mixtral", "mixtral", layer=1, moe_layers=(0, 1), seed=11,
            config=dict(_COMMON, intermediate_size=24, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, num_local_experts=8, num_experts_per_tok=2),
        ),
        # Qwen2-MoE as Qwen1.5-MoE: norm_topk_prob False, sigmoid-gated shared expert.
        # mlp_only_layers=[0] -> layer 0 dense, layers 1, 2 MoE.
        Variant(
            "qwen2_moe", "qwen2_moe", layer=2, moe_layers=(1, 2), seed=22,
            config=dict(_COMMON, intermediate_size=40, moe_intermediate_size=24,
                        shared_expert_intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
                        num_key_value_heads=2, num_experts=8, num_experts_per_tok=2,
                        decoder_sparse_step=1, mlp_only_layers=[0], norm_topk_prob=False),
        ),
        # Qwen2-MoE with norm_topk_prob True and decoder_sparse_step=2 -> MoE at 1, 3.
        Variant(
            "qwen2_moe_normtopk", "qwen2_moe", layer=3, moe_layers=(1, 3), seed=33,
            config=dict(_COMMON, intermediate_size=40, moe_intermediate_size=16,
                        shared_expert_intermediate_size=32, num_hidden_layers=4, num_attention_heads=4,
                        num_key_value_heads=2, num_experts=8, num_experts_per_tok=3,
                        decoder_sparse_step=2, mlp_only_layers=[], norm_topk_prob=True),
        ),
        # Qwen3-MoE (norm_topk_prob True as in the released checkpoints); mlp_only_layers
        # [0, 2] -> MoE at 1, 3.
        Variant(
            "qwen3_moe", "qwen3_moe", layer=1, moe_layers=(1, 3), seed=44,
            config=dict(_COMMON, intermediate_size=40, moe_intermediate_size=24, num_hidden_layers=4,
                        num_attention_heads=4, num_key_value_heads=2, head_dim=8, num_experts=8,
                        num_experts_per_tok=2, decoder_sparse_step=1, mlp_only_layers=[0, 2],
                        norm_topk_prob=True),
        ),
        # DeepSeek-V3: first_k_dense_replace=1 -> layer 0 dense, layers 1, 2 MoE.
        Variant(
            "deepseek_v3", "deepseek_v3", layer=2, moe_layers=(1, 2), seed=55,
            config=dict(_COMMON, intermediate_size=40, moe_intermediate_size=16, num_hidden_layers=3,
                        num_attention_heads=4, num_key_value_heads=4, n_shared_experts=1,
                        n_routed_experts=8, n_group=4, topk_group=2, num_experts_per_tok=3,
                        first_k_dense_replace=1, routed_scaling_factor=2.5, norm_topk_prob=True,
                        kv_lora_rank=16, q_lora_rank=24, qk_rope_head_dim=8, qk_nope_head_dim=8,
                        v_head_dim=8),
        ),
        # OLMoE: Qwen3-MoE's block without shared experts; norm_topk_prob False (its default).
        Variant(
            "olmoe", "olmoe", layer=1, moe_layers=(0, 1), seed=66,
            config=dict(_COMMON, intermediate_size=24, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, num_experts=8, num_experts_per_tok=3, norm_topk_prob=False),
        ),
        # Granite MoE: fused experts on disk (input_linear / output_linear), router.layer.
        Variant(
            "granitemoe", "granitemoe", layer=0, moe_layers=(0, 1), seed=77,
            config=dict(_COMMON, intermediate_size=24, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, num_local_experts=8, num_experts_per_tok=2),
        ),
        # GLM-4.5: DeepSeek-V3's router with 2 groups (1 kept), 2 shared experts, scaling 1.5.
        Variant(
            "glm4_moe", "glm4_moe", layer=2, moe_layers=(1, 2), seed=88,
            config=dict(_COMMON, intermediate_size=40, moe_intermediate_size=16, num_hidden_layers=3,
                        num_attention_heads=4, num_key_value_heads=2, head_dim=8, n_shared_experts=2,
                        n_routed_experts=8, n_group=2, topk_group=1, num_experts_per_tok=3,
                        first_k_dense_replace=1, routed_scaling_factor=1.5, norm_topk_prob=True),
        ),
        # Qwen3.5-MoE, text-only and multimodal (the same decoder under text_config).
        Variant("qwen3_5_moe_text", "qwen3_5_moe_text", layer=1, moe_layers=(0, 1), seed=99,
                config=_QWEN3_5_TEXT),
        Variant(
            "qwen3_5_moe", "qwen3_5_moe", layer=0, moe_layers=(0, 1), seed=111,
            config=dict(text_config=_QWEN3_5_TEXT, tie_word_embeddings=False,
                        vision_config=dict(depth=1, hidden_size=16, intermediate_size=16, num_heads=2,
                                           out_hidden_size=32, num_position_embeddings=16)),
        ),
        # Llama 4: top-1, MoE every second layer; and the multimodal checkpoint with top-2.
        Variant("llama4_text", "llama4_text", layer=1, moe_layers=(1,), seed=122, config=_LLAMA4_TEXT),
        Variant(
            "llama4", "llama4", layer=1, moe_layers=(1,), seed=133,
            config=dict(text_config=dict(_LLAMA4_TEXT, num_experts_per_tok=2), tie_word_embeddings=False,
                        vision_config=dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                           intermediate_size=16, vision_output_dim=16, projector_input_dim=16,
                                           projector_output_dim=32, image_size=28, patch_size=14)),
        ),
    ]
}

# --------------------------------------------------------------------------- model


def build_model(v: Variant):
    """Tiny float32 random model with randomised (std 0.2) MoE blocks, eager experts."""
    torch.manual_seed(v.seed)
    cfg = getattr(transformers, v.a.config_class)(**v.config)
    model_class = getattr(transformers, v.a.model_class)
    if v.a.model_class.startswith("Auto"):
        model = model_class.from_config(cfg, dtype=torch.float32)
    else:
        model = model_class(cfg)  # float32, torch's default
    # The plain per-expert python loop, not grouped_mm / batched_mm kernels.
    model.set_experts_implementation("eager")
    model.eval()
    layers = decoder_layers(model)
    moe = tuple(i for i in range(len(layers)) if hasattr(getattr(layers[i], v.a.block), "experts"))
    assert moe == v.moe_layers, (v.name, moe)
    gen = torch.Generator().manual_seed(v.seed + 1)
    with torch.no_grad():
        for i in moe:
            blk = getattr(layers[i], v.a.block)
            for _, p in sorted(blk.named_parameters()):
                p.normal_(0.0, WEIGHT_STD, generator=gen)
            if v.a.family == "deepseek":
                blk.gate.e_score_correction_bias.uniform_(-BIAS_RANGE, BIAS_RANGE, generator=gen)
    return model


def decoder_layers(model):
    """The decoder layers of a text model or of a multimodal model's language model."""
    if hasattr(model, "language_model"):  # Llama4ForConditionalGeneration
        return model.language_model.model.layers
    inner = model.model
    return inner.language_model.layers if hasattr(inner, "language_model") else inner.layers


def moe_block(model, layer: int):
    """The module the decoder layer calls on the post-attention-norm hidden states."""
    dl = decoder_layers(model)[layer]
    for name in ("block_sparse_moe", "feed_forward", "mlp"):
        if hasattr(dl, name):
            return getattr(dl, name)
    raise AssertionError("no MoE block")


def block_forward(block, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        out = block(torch.from_numpy(x)[None])
    if isinstance(out, tuple):  # (hidden, router_logits): older transformers, Llama 4
        out = out[0]
    return out.reshape(x.shape).detach().numpy().astype(np.float32)


def bf16_rounded_block(block):
    blk = copy.deepcopy(block)
    with torch.no_grad():
        for _, p in blk.named_parameters():
            p.copy_(p.to(torch.bfloat16).to(torch.float32))
    return blk


# --------------------------------------------------------------------------- layouts

# Checkpoint names: group 1 is the decoder prefix (model.layers, or a multimodal
# model's model.language_model.layers), group 2 the layer.
_DECODER = r"^((?:model\.(?:language_model\.)?|language_model\.model\.)layers)\.(\d+)\."
_PE_MIXTRAL = re.compile(_DECODER + r"block_sparse_moe\.(.+)$")
_PE_EXPERT = re.compile(_DECODER + r"(mlp|block_sparse_moe)\.experts\.(\d+)\.(\w+)\.weight$")
_FUSED = re.compile(_DECODER + r"(mlp|block_sparse_moe)\.experts\.(gate_up_proj|down_proj)$")
# Granite MoE has no per-expert tensors: save_pretrained writes its own fused
# names (transformers/conversion_mapping.py "granitemoe", reverted on save),
# which stand in for the per_expert layout here; fused = the in-memory names.
_GRANITE_ON_DISK = {"input_linear.weight": "experts.gate_up_proj", "output_linear.weight": "experts.down_proj",
                    "router.layer.weight": "router.weight"}



def detect_layout(names) -> str:
    names = list(names)
    if any(n.endswith(".feed_forward.experts.gate_up_proj") for n in names):
        return "per_expert"  # Llama 4's one layout: what save_pretrained writes
    if any(_FUSED.match(n) for n in names):
        return "fused"
    if any(_PE_EXPERT.match(n) or n.endswith(".block_sparse_moe.input_linear.weight") for n in names):
        return "per_expert"
    raise AssertionError("no MoE expert tensors found")


def _granite_rename(tensors, to_fused: bool):
    pairs = _GRANITE_ON_DISK.items() if to_fused else ((b, a) for a, b in _GRANITE_ON_DISK.items())
    pairs = [("block_sparse_moe." + a, "block_sparse_moe." + b) for a, b in pairs]
    out = {}
    for name, t in tensors.items():
        for a, b in pairs:
            if name.endswith(a):
                name = name[: -len(a)] + b
                break
        out[name] = t
    return out


def to_fused(arch: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """per-expert -> fused (transformers 5.x in-memory names)."""
    if ARCHS[arch].single_layout:
        return dict(tensors)
    if ARCHS[arch].proj is None:
        return _granite_rename(tensors, to_fused=True)
    g_name, u_name, d_name = ARCHS[arch].proj
    out: dict[str, torch.Tensor] = {}
    experts: dict[tuple[str, int], dict[int, dict[str, torch.Tensor]]] = {}
    for name, t in tensors.items():
        m = _PE_EXPERT.match(name)
        if m:
            key = (m.group(1), int(m.group(2)))
            experts.setdefault(key, {}).setdefault(int(m.group(4)), {})[m.group(5)] = t
            continue
        m = _PE_MIXTRAL.match(name)
        if m:  # mixtral router: block_sparse_moe.gate.weight -> mlp.gate.weight
            name = f"{m.group(1)}.{m.group(2)}.mlp.{m.group(3)}"
        out[name] = t
    for (dec, layer), per in experts.items():
        ids = sorted(per)
        assert ids == list(range(len(ids))), (layer, ids)
        gate_up = torch.stack([torch.cat([per[e][g_name], per[e][u_name]], dim=0) for e in ids])
        down = torch.stack([per[e][d_name] for e in ids])
        out[f"{dec}.{layer}.mlp.experts.gate_up_proj"] = gate_up.contiguous()
        out[f"{dec}.{layer}.mlp.experts.down_proj"] = down.contiguous()
    return out


def to_per_expert(arch: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """fused -> per-expert (the legacy names save_pretrained writes)."""
    if ARCHS[arch].single_layout:
        return dict(tensors)
    if ARCHS[arch].proj is None:
        return _granite_rename(tensors, to_fused=False)
    g_name, u_name, d_name = ARCHS[arch].proj
    blk = "block_sparse_moe" if arch == "mixtral" else "mlp"
    fused_layers = {(m.group(1), int(m.group(2))) for m in map(_FUSED.match, tensors) if m}
    out: dict[str, torch.Tensor] = {}
    for name, t in tensors.items():
        m = _FUSED.match(name)
        if m:
            dec, layer, kind = m.group(1), int(m.group(2)), m.group(4)
            for e in range(t.shape[0]):
                p = f"{dec}.{layer}.{blk}.experts.{e}."
                if kind == "gate_up_proj":
                    inter = t.shape[1] // 2
                    out[p + f"{g_name}.weight"] = t[e, :inter].contiguous()
                    out[p + f"{u_name}.weight"] = t[e, inter:].contiguous()
                else:
                    out[p + f"{d_name}.weight"] = t[e].contiguous()
            continue
        m = re.match(_DECODER + r"mlp\.(.+)$", name)
        if arch == "mixtral" and m and (m.group(1), int(m.group(2))) in fused_layers:
            name = f"{m.group(1)}.{m.group(2)}.block_sparse_moe.{m.group(3)}"
        out[name] = t
    return out


def convert_layout(arch: str, tensors, target: str):
    if detect_layout(tensors) == target:
        return dict(tensors)
    return to_fused(arch, tensors) if target == "fused" else to_per_expert(arch, tensors)


def read_checkpoint(d: str) -> dict[str, torch.Tensor]:
    """All tensors of a (possibly sharded) safetensors checkpoint directory."""
    index = os.path.join(d, "model.safetensors.index.json")
    files = (sorted(set(json.load(open(index))["weight_map"].values())) if os.path.exists(index)
             else ["model.safetensors"])
    out: dict[str, torch.Tensor] = {}
    for f in files:
        out.update(load_file(os.path.join(d, f)))
    return out


def write_checkpoint(src_dir: str, dst_dir: str, tensors: dict[str, torch.Tensor]) -> None:
    """Single-file checkpoint with src_dir's config.json and the given tensors."""
    os.makedirs(dst_dir, exist_ok=True)
    for f in ("config.json", "generation_config.json"):
        if os.path.exists(os.path.join(src_dir, f)):
            shutil.copy(os.path.join(src_dir, f), dst_dir)
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(dst_dir, "model.safetensors"),
              metadata={"format": "pt"})


def checkpoint_dtypes(d: str) -> dict[str, str]:
    index = os.path.join(d, "model.safetensors.index.json")
    files = (sorted(set(json.load(open(index))["weight_map"].values())) if os.path.exists(index)
             else ["model.safetensors"])
    out = {}
    for f in files:
        with safe_open(os.path.join(d, f), "pt") as h:
            for k in h.keys():
                out[k] = h.get_slice(k).get_dtype()
    return out


def layer_moe_prefix(arch: str, layer: int, layout: str) -> str:
    a = ARCHS[arch]
    blk = "block_sparse_moe" if (arch == "mixtral" and layout != "fused") else a.block
    return f"{a.decoder}.{layer}.{blk}."


def router_name(arch: str, layer: int, layout: str) -> str:
    """The router weight's checkpoint name in `layout` ("per_expert" or "fused")."""
    pre = layer_moe_prefix(arch, layer, layout)
    if ARCHS[arch].router == "gate":
        return pre + "gate.weight"
    if ARCHS[arch].single_layout:
        return pre + "router.weight"
    return pre + ("router.weight" if layout == "fused" else "router.layer.weight")


def expert_weights(arch: str, t: dict, prefix: str, e: int):
    """(gate [I, H], up [I, H], down [H, I]) of expert e from per_expert-layout tensors."""
    if ARCHS[arch].single_layout:  # llama4: gate_up_proj [E, H, 2I] (gate columns first), down_proj [E, I, H]
        gu = t[prefix + "experts.gate_up_proj"][e]
        inter = gu.shape[1] // 2
        return gu[:, :inter].T, gu[:, inter:].T, t[prefix + "experts.down_proj"][e].T
    if ARCHS[arch].proj is None:  # granite: input_linear [E, 2I, H] (gate rows first), output_linear [E, H, I]
        gu = t[prefix + "input_linear.weight"][e]
        inter = gu.shape[0] // 2
        return gu[:inter], gu[inter:], t[prefix + "output_linear.weight"][e]
    g, u, d = ARCHS[arch].proj
    q = f"{prefix}experts.{e}."
    return t[q + g + ".weight"], t[q + u + ".weight"], t[q + d + ".weight"]


def bf16_moe_tensors(arch: str, layer: int, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Store every weight of layer `layer`'s MoE block (routed + shared experts, router,
    shared-expert gate) as bfloat16; e_score_correction_bias stays float32 as in the
    released DeepSeek-V3 checkpoints."""
    prefix = layer_moe_prefix(arch, layer, detect_layout(tensors))
    out = {}
    for k, t in tensors.items():
        if k.startswith(prefix) and not k.endswith("e_score_correction_bias"):
            t = t.to(torch.bfloat16)
        out[k] = t
    return out


# --------------------------------------------------------------------------- facts

def _silu(a):
    return a / (1.0 + np.exp(-a))


def _mlp(x, g, u, d):
    return (_silu(x @ g.T) * (x @ u.T)) @ d.T


def _route(v: Variant, t: dict, x: np.ndarray, use_bias=True, use_groups=True):
    """Returns (selected indices [T,k], weights [T,k], gaps) following the
    architecture facts switchyard implements (float64)."""
    c = v.text
    p = layer_moe_prefix(v.arch, v.layer, "per_expert")
    logits = x @ t[router_name(v.arch, v.layer, "per_expert")].T
    k = c["num_experts_per_tok"]
    gaps = []
    if v.a.family == "softmax":
        z = np.exp(logits - logits.max(-1, keepdims=True))
        probs = z / z.sum(-1, keepdims=True)
        order = np.argsort(-probs, axis=-1, kind="stable")
        idx = order[:, :k]
        srt = np.take_along_axis(probs, order, -1)
        gaps.append(srt[:, k - 1] - srt[:, k])
        w = np.take_along_axis(probs, idx, -1)
        if v.a.renormalize if v.a.renormalize is not None else c["norm_topk_prob"]:
            w = w / w.sum(-1, keepdims=True)
        return idx, w, np.min(gaps)
    if v.a.family == "sigmoid_topk":  # Llama 4
        order = np.argsort(-logits, axis=-1, kind="stable")
        srt = np.take_along_axis(logits, order, -1)
        gaps.append(srt[:, k - 1] - srt[:, k])
        idx = order[:, :k]
        return idx, 1.0 / (1.0 + np.exp(-np.take_along_axis(logits, idx, -1))), np.min(gaps)
    # deepseek family (DeepSeek-V3, GLM-4.5)
    e = v.num_experts
    ng, tg = c["n_group"], c["topk_group"]
    s = 1.0 / (1.0 + np.exp(-logits))
    b = s + (t[p + "gate.e_score_correction_bias"][None] if use_bias else 0.0)
    if use_groups:
        grp = np.sort(b.reshape(len(b), ng, e // ng), axis=-1)[:, :, ::-1][:, :, :2].sum(-1)
        gorder = np.argsort(-grp, axis=-1, kind="stable")
        gsrt = np.take_along_axis(grp, gorder, -1)
        gaps.append(gsrt[:, tg - 1] - gsrt[:, tg])
        keep = np.zeros_like(grp, dtype=bool)
        np.put_along_axis(keep, gorder[:, :tg], True, -1)
        b = np.where(np.repeat(keep, e // ng, axis=-1), b, -np.inf)
    order = np.argsort(-b, axis=-1, kind="stable")
    idx = order[:, :k]
    srt = np.take_along_axis(b, order, -1)
    gaps.append(srt[:, k - 1] - srt[:, k])
    gaps.append(np.minimum(srt[:, k - 1], 1.0))  # selected biased scores must be positive
    w = np.take_along_axis(s, idx, -1)
    if c["norm_topk_prob"]:
        w = w / (w.sum(-1, keepdims=True) + 1e-20)
    w = w * c["routed_scaling_factor"]
    return idx, w, np.min(gaps)


def _np_tensors(tensors) -> dict[str, np.ndarray]:
    return {k: t.to(torch.float64).numpy() for k, t in tensors.items()}


def facts_forward(v: Variant, tensors, x: np.ndarray) -> np.ndarray:
    """Independent float64 implementation of the architecture facts, reading the
    per-expert checkpoint tensors."""
    t = _np_tensors(tensors)
    x = x.astype(np.float64)
    p = layer_moe_prefix(v.arch, v.layer, "per_expert")
    idx, w, _ = _route(v, t, x)
    y = np.zeros_like(x)
    for tok in range(x.shape[0]):
        for j in range(idx.shape[1]):
            gud = expert_weights(v.arch, t, p, idx[tok, j])
            if v.a.scales_input:  # Llama 4: E(w x)
                y[tok] += _mlp(w[tok, j] * x[tok:tok + 1], *gud)[0]
            else:
                y[tok] += w[tok, j] * _mlp(x[tok:tok + 1], *gud)[0]
    if v.a.shared_gated:  # Qwen2-MoE, Qwen3.5-MoE
        q = p + "shared_expert."
        sh = _mlp(x, t[q + "gate_proj.weight"], t[q + "up_proj.weight"], t[q + "down_proj.weight"])
        gate = 1.0 / (1.0 + np.exp(-(x @ t[p + "shared_expert_gate.weight"].T)))
        y += gate * sh
    elif v.a.shared:  # DeepSeek-V3, GLM-4.5 (shared_experts), Llama 4 (shared_expert)
        q = p + v.a.shared + "."
        y += _mlp(x, t[q + "gate_proj.weight"], t[q + "up_proj.weight"], t[q + "down_proj.weight"])
    return y


def routing_margin(v: Variant, tensors, x: np.ndarray) -> float:
    return float(_route(v, _np_tensors(tensors), x.astype(np.float64))[2])


def deepseek_selection_sensitivity(v: Variant, tensors, x: np.ndarray) -> tuple[int, int]:
    """(#tokens whose expert set changes without the bias, ... without group limiting)."""
    t = _np_tensors(tensors)
    x = x.astype(np.float64)
    ref = np.sort(_route(v, t, x)[0], -1)
    nob = np.sort(_route(v, t, x, use_bias=False)[0], -1)
    nog = np.sort(_route(v, t, x, use_groups=False)[0], -1)
    return int((ref != nob).any(-1).sum()), int((ref != nog).any(-1).sum())


def make_input(v: Variant, tensor_sets, tokens: int = T_TOKENS) -> np.ndarray:
    """Random x [T, H] float32 whose routing has a safe margin for every tensor set."""
    for attempt in range(100):
        rng = np.random.default_rng(1000 * v.seed + attempt)
        x = rng.standard_normal((tokens, v.text["hidden_size"])).astype(np.float32)
        if all(routing_margin(v, ts, x) >= MIN_ROUTING_GAP for ts in tensor_sets):
            return x
    raise AssertionError(f"{v.name}: no input with routing gap >= {MIN_ROUTING_GAP}")


# --------------------------------------------------------------------------- gradients
#
# Reference for `switchyard forward --grad-output g.npy --grads grads.safetensors
# [--aux-loss-coef A --z-loss-coef Z]`: the loss is
#     L = sum(g * y) + A * aux + Z * zloss,   y = block(x),
#     aux   = E * sum_e f_e P_e   (transformers' load_balancing_loss_func for one layer,
#             no attention mask: f_e = #(top-k slots of all tokens on e) / T, summed
#             over the k slots, P_e = mean_t softmax(router_logits_t)_e),
#     zloss = mean_t logsumexp(router_logits_t)^2,
# and its gradients are taken by torch autograd through transformers' own MoE block.

NON_TRAINABLE = ("e_score_correction_bias",)  # DeepSeek selection bias: a buffer, no gradient


def router_aux_losses(logits: torch.Tensor, selected: torch.Tensor, num_experts: int):
    """(aux, zloss) of one layer from router logits [T, E] and the top-k expert ids
    [T, k] that count for f (f carries no gradient, as in transformers: one_hot/histc)."""
    p = torch.softmax(logits, dim=-1)
    counts = torch.nn.functional.one_hot(selected.long(), num_experts).sum(dim=(0, 1)).to(logits.dtype)
    f = counts / logits.shape[0]
    aux = num_experts * torch.sum(f * p.mean(dim=0))
    zloss = torch.logsumexp(logits, dim=-1).pow(2).mean()
    return aux, zloss


def transformers_load_balancing_loss(v: Variant, logits: torch.Tensor) -> float:
    """transformers' own load_balancing_loss_func on this one layer's logits (float32)."""
    # Architectures without their own load_balancing_loss_func (the DeepSeek
    # family, Qwen3.5-MoE) use the same formula as Mixtral's.
    pkg = v.arch.removesuffix("_text")
    own = importlib.import_module(f"transformers.models.{pkg}.modeling_{pkg}")
    mixtral = transformers.models.mixtral.modeling_mixtral
    func = getattr(own, "load_balancing_loss_func", mixtral.load_balancing_loss_func)
    e, k = v.num_experts, v.text["num_experts_per_tok"]
    return float(func((logits.detach().float(),), e, k))


def block_grads(v: Variant, block, x: np.ndarray, g: np.ndarray, dtype=torch.float64,
                aux_coef: float = 0.0, z_coef: float = 0.0, aux_selection: str = "routed"):
    """Autograd gradients of L (above) w.r.t. x and every trainable parameter of a copy
    of `block` cast to `dtype`.  Returns ({"hidden_states": dL/dx [T, H]} plus
    {in-memory parameter name: grad}, all float64 numpy, and info).

    aux_selection picks the expert ids that count for f: "routed" (the ids the block's
    router selected; identical to the softmax top-k for mixtral/qwen) or "softmax_topk"
    (top-k of softmax(logits), what load_balancing_loss_func does for any model).
    Note transformers computes the router softmax (mixtral/qwen) or the whole router
    (deepseek_v3) in float32 even in a float64 block; those parts stay float32."""
    blk = copy.deepcopy(block).to(dtype)
    blk.zero_grad(set_to_none=True)
    captured = {}
    # Routers return (logits, weights, indices); Llama4Router (scores, logits).
    llama4 = v.a.family == "sigmoid_topk"
    hook = getattr(blk, v.a.router).register_forward_hook(
        lambda m, i, o: captured.update(logits=o[1], idx=None) if llama4 else captured.update(logits=o[0], idx=o[2]))
    xt = torch.tensor(x, dtype=dtype)[None].requires_grad_(True)
    try:
        y = blk(xt)
    finally:
        hook.remove()
    if isinstance(y, tuple):
        y = y[0]
    loss = (torch.tensor(g, dtype=dtype)[None] * y).sum()
    logits, idx = captured["logits"], captured["idx"]
    e, k = v.num_experts, v.text["num_experts_per_tok"]
    if idx is None:
        idx = captured["idx"] = torch.topk(logits.detach(), k, dim=-1)[1]
    info = {}
    if aux_coef or z_coef:
        if aux_selection == "softmax_topk":
            idx = torch.topk(torch.softmax(logits.detach(), -1), k, dim=-1)[1]
        aux, zloss = router_aux_losses(logits, idx, e)
        loss = loss + aux_coef * aux + z_coef * zloss
        info.update(aux=float(aux.detach()), zloss=float(zloss.detach()),
                    hf_aux=transformers_load_balancing_loss(v, logits))
    loss.backward()
    out = {"hidden_states": xt.grad[0].detach().to(torch.float64).numpy()}
    for name, p in blk.named_parameters():
        assert p.requires_grad and p.grad is not None, name
        out[name] = p.grad.detach().to(torch.float64).numpy()
    for name, _ in blk.named_buffers():
        assert name.endswith(NON_TRAINABLE), name
    info["selected"] = captured["idx"].detach().numpy()
    return out, info


def grads_to_checkpoint_names(v: Variant, grads: dict[str, np.ndarray], layout: str) -> dict[str, np.ndarray]:
    """Maps block_grads' in-memory names to the checkpoint names of `layout`
    ("fused" or "per_expert"): fused experts are split per expert (gate rows first) for
    per_expert, and mixtral's router moves to block_sparse_moe.gate.weight."""
    pre = layer_moe_prefix(v.arch, v.layer, "fused")
    named = {("hidden_states" if n == "hidden_states" else pre + n): torch.from_numpy(a) for n, a in grads.items()}
    conv = convert_layout(v.arch, named, layout) if layout == "per_expert" else named
    return {n: t.numpy() for n, t in conv.items()}
