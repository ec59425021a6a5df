"""Key maps from the reference implementations' checkpoint layouts to the models' names: the
machinery each arch module builds its maps from, with its own name tables, and registers
(`register_model(..., checkpoint_keys=...)`).

- ``caffe2``, PySlowFast's Caffe2 model zoo: each blob name is matched against the arch's
  `Caffe2Rule` list, as PySlowFast's converter does (``res2_0_branch2a_bn_s`` ->
  ``s2.pathway0_res0.branch2.a_bn.weight``); the Fast pathway's blobs carry a ``t_`` prefix.
- ``pytorchvideo``: a key's block, pathway, residual block and module are parsed
  (``blocks.1.multipathway_blocks.0.res_blocks.2.branch2.conv_a.weight``) and the arch's tables
  give the module's name in PySlowFast's layout.
- any other layout (torchvision's, PyTorchVideo's mobile and transformer models): an ordered list
  of `Rename` rules, each a whole-name pattern and its replacement.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence, Union

from streamrec.models import KeyMap

# --------------------------------------------------------------------------- Caffe2

CAFFE2_PARAM = {"w": "weight", "b": "bias", "s": "weight", "rm": "running_mean", "riv": "running_var"}
CAFFE2_BN = r"bn_(s|b|rm|riv)"  # a batch norm's blobs; the pattern's last group is always the parameter


@dataclass(frozen=True)
class Caffe2Rule:
    """A blob name (after the Fast pathway's ``t_`` prefix), the module it names, on which pathways."""

    pattern: re.Pattern[str]
    module: Callable[[re.Match[str], int], str]  # (match, pathway) -> module path
    pathways: tuple[int, ...] = (0, 1)


def caffe2_rule(pattern: str, module: Callable[[re.Match[str], int], str],
                pathways: tuple[int, ...] = (0, 1)) -> Caffe2Rule:
    return Caffe2Rule(re.compile(pattern), module, pathways)


def caffe2_name(rules: Sequence[Caffe2Rule], blob: str) -> str | None:
    """The model's name for a Caffe2 blob, or None if no rule names it."""
    pathway, name = (1, blob[2:]) if blob.startswith("t_") else (0, blob)
    for rule in rules:
        match = rule.pattern.fullmatch(name)
        if match and pathway in rule.pathways:
            return f"{rule.module(match, pathway)}.{CAFFE2_PARAM[match[match.lastindex]]}"
    return None


def caffe2_keys(rules: Sequence[Caffe2Rule]) -> KeyMap:
    """The key map of an arch whose Caffe2 blobs these rules name."""
    return lambda keys: {key: caffe2_name(rules, key) for key in keys}


# --------------------------------------------------------------------------- PyTorchVideo

PYTORCHVIDEO_KEY = re.compile(
    r"blocks\.(?P<block>\d+)\."
    r"(?:multipathway_blocks\.(?P<pathway>\d+)\.|(?P<fusion>multipathway_fusion)\.)?"
    r"(?:res_blocks\.(?P<index>\d+)\.)?"
    r"(?P<module>.+)\.(?P<param>weight|bias|running_mean|running_var|num_batches_tracked)"
)


@dataclass(frozen=True)
class PyTorchVideoNames:
    """An arch's PyTorchVideo module names -> PySlowFast's, by where the module sits."""

    res_block: Mapping[str, str]  # inside a residual block (``branch2.conv_a`` -> ``branch2.a``)
    outer: Mapping[str, str]  # the stem (block 0) and the head (any later block outside the stages)
    fusion: Mapping[str, str] | None = None  # SlowFast's Fast->Slow laterals


def pytorchvideo_keys(names: PyTorchVideoNames) -> KeyMap:
    """The key map of an arch whose PyTorchVideo modules ``names`` names.

    Residual stages are numbered s2..s5 in order of their block index, which skips the
    parameter-free blocks some builders insert (I3D's pool after res2).
    """

    def rename(keys: Sequence[str]) -> dict[str, str | None]:
        matches = {key: PYTORCHVIDEO_KEY.fullmatch(key) for key in keys}
        stage_blocks = sorted({int(m["block"]) for m in matches.values() if m and m["index"] is not None})
        stage_of = {block: f"s{i + 2}" for i, block in enumerate(stage_blocks)}
        return {key: _pytorchvideo_name(m, stage_of, names) if m else None for key, m in matches.items()}

    return rename


def _pytorchvideo_name(m: re.Match[str], stage_of: dict[int, str], names: PyTorchVideoNames) -> str | None:
    block, module, param = int(m["block"]), m["module"], m["param"]
    if m["index"] is not None:  # a residual block
        inner = names.res_block.get(module)
        pathway = m["pathway"] or "0"
        return inner and f"{stage_of[block]}.pathway{pathway}_res{m['index']}.{inner}.{param}"
    if m["fusion"]:  # the Fast->Slow lateral after the stem (block 0) or a stage
        lateral = (names.fusion or {}).get(module)
        stage = "s1" if block == 0 else stage_of.get(block)
        return lateral and stage and f"{stage}_fuse.{lateral}.{param}"
    outer = names.outer.get(module)
    if outer is None:
        return None
    if block == 0:
        return f"s1.pathway{m['pathway'] or '0'}_stem.{outer}.{param}"
    return f"head.{outer}.{param}"


# --------------------------------------------------------------------------- rename rules


@dataclass(frozen=True)
class Rename:
    """Tensor names matching ``pattern`` (whole name) become ``replacement``: a template with
    ``\\1``-style groups, or a function of the match where a group needs arithmetic."""

    pattern: re.Pattern[str]
    replacement: Union[str, Callable[[re.Match[str]], str]]

    def apply(self, match: re.Match[str]) -> str:
        return self.replacement(match) if callable(self.replacement) else match.expand(self.replacement)


def rename(pattern: str, replacement: Union[str, Callable[[re.Match[str]], str]]) -> Rename:
    return Rename(re.compile(pattern), replacement)


def renamed_keys(rules: Sequence[Rename]) -> KeyMap:
    """The key map of a layout whose names the first matching rule rewrites; names no rule matches
    are no layer of the arch."""

    def rename_all(keys: Sequence[str]) -> dict[str, str | None]:
        names: dict[str, str | None] = {}
        for key in keys:
            names[key] = next((rule.apply(m) for rule in rules if (m := rule.pattern.fullmatch(key))), None)
        return names

    return rename_all


def either(*maps: KeyMap) -> KeyMap:
    """One layout's key map made of several, each tried in turn for the names the earlier ones leave
    unnamed (a layout that covers two module families, e.g. PyTorchVideo's X3D and its mobile X3D)."""

    def rename_all(keys: Sequence[str]) -> dict[str, str | None]:
        names = dict.fromkeys(keys)
        for key_map in maps:
            left = [key for key, name in names.items() if name is None]
            if not left:
                break
            names.update({key: name for key, name in key_map(left).items() if name is not None})
        return names

    return rename_all
