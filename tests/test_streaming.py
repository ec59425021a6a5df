"""The streaming forms (`streamrec.models.streaming`) against the clip models they are built from.

Delayed-exact: every stage's per-step features, computed one hop at a time over carried state,
equal the clip model's features on one long clip (which sees every frame at once), step for step
from the stream's first step (zero padding before it, as the clip model's) to the last; and the
logits of every call once the running mean holds a clip equal the clip model's head on that
window of the long clip's features. The models: the shipped tiny SlowFast with its weights, a
full-depth SlowFast R50 8x8 with random weights at a small crop, and small single-pathway
ResNets for each way time is strided (I3D's pool, CSN's strided depthwise convs, R(2+1)D's
factorised ones).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from streamrec.checkpoints import load_model
from streamrec.config import load_config
from streamrec.errors import StreamrecError
from streamrec.models.slowfast import SlowFast
from streamrec.models import streaming as streaming_module
from streamrec.models.streaming import CAUSAL, FORMS, TapSums, streaming_network, units_for_hop

SMALL = ["clip.crop_size=64", "clip.short_side=80"]
NARROW = [*SMALL, "model.depth=[1,1,2,1]", "model.width=8"]
TOLERANCE = 1e-4  # relative to the largest value of the compared tensor (or 1, if smaller)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class _Stop(Exception):
    pass


def long_clip(config, units: int, seed: int = 0) -> list[torch.Tensor]:
    """A long clip of random frames, each pathway sampled uniformly: Slow is every alpha-th Fast frame."""
    network = streaming_network(load_model(config.replace(checkpoint=None)), config.clip)
    generator = torch.Generator().manual_seed(seed)
    size = config.clip.crop_size
    fast = torch.randint(0, 256, (1, units * max(network.rates), size, size, 3), dtype=torch.uint8,
                         generator=generator)
    return [fast[:, ::config.clip.alpha], fast] if config.clip.alpha else [fast]


def clip_features(model, inputs: list[torch.Tensor], names: list[str]) -> dict[str, list[torch.Tensor]]:
    """Each named stage's output of the clip network on the whole of ``inputs`` (stopped before the head)."""
    found: dict[str, list[torch.Tensor]] = {}
    network = model.network
    hooks = [getattr(network, name).register_forward_hook(
        lambda _m, _a, out, name=name: found.__setitem__(name, out if isinstance(out, list) else [out]))
        for name in names]
    hooks.append(network.head.register_forward_pre_hook(lambda *_: (_ for _ in ()).throw(_Stop())))
    try:
        with torch.no_grad():
            model(*inputs)
    except _Stop:
        pass
    finally:
        for hook in hooks:
            hook.remove()
    return found


def stream(network, inputs: list[torch.Tensor], state: torch.Tensor | None = None):
    """Feed ``inputs`` one call at a time; the logits, traces and final state of every call."""
    calls = inputs[0].shape[1] // (network.rates[0] * network.units)
    state = network.zero_state(inputs[0].shape[0]) if state is None else state
    logits, traces = [], []
    with torch.no_grad():
        for call in range(calls):
            frames = [x[:, call * r * network.units:(call + 1) * r * network.units] for x, r in zip(inputs, network.rates)]
            out, state, trace = network.traced(frames, state)
            logits.append(out)
            traces.append(trace)
    return logits, traces, state


def spread_head(network, features: list[torch.Tensor], rates: list[int]) -> None:
    """Give a random network a classifier whose logits differ from window to window (a random one
    gives nearly constant logits, which would make equal logits a weak check): the component all
    steps share is taken out of its weights, which are scaled to logits of spread 1."""
    steps = torch.cat([x.mean(dim=(3, 4)).repeat_interleave(rates[-1] // r, dim=2) for x, r in zip(features, rates)],
                      dim=1)[0].T  # [steps at the finest rate, channels]
    projection = network.head.projection
    with torch.no_grad():
        common = steps.mean(0) / steps.mean(0).norm()
        weight = torch.randn(projection.weight.shape, generator=torch.Generator().manual_seed(0))
        weight -= torch.outer(weight @ common, common)
        projection.weight.copy_(weight / (steps @ weight.T).std())
        projection.bias.zero_()


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / max(1.0, float(b.abs().max())))


def assert_same_logits_every_call(network, reference, config, seed: int) -> None:
    """Two streaming networks fed the same frames, one call at a time from a fresh state, past
    the warm-up and three calls more: every call's logits equal to 1e-5, and not all near zero."""
    inputs = long_clip(config, network.warmup_units + 3 * network.units, seed=seed)
    logits, _, _ = stream(network, inputs)
    expected, _, _ = stream(reference, inputs)
    assert torch.stack(expected).abs().max() > 0.1
    for call, (out, want) in enumerate(zip(logits, expected)):
        assert relative(out, want) <= 1e-5, call


CASES = {
    "slowfast_tiny": ("slowfast_tiny", []),  # the shipped weights
    "slowfast_r50_8x8": ("slowfast_r50_8x8", SMALL),
    "i3d": ("i3d_r50_8x8", NARROW),
    "csn": ("csn_r101", NARROW),
    "r2plus1d": ("r2plus1d_r50", NARROW),
}


@pytest.mark.parametrize("case", list(CASES))
def test_delayed_exact_features_and_logits_equal_the_clip_model_on_a_long_clip(case):
    name, overrides = CASES[case]
    config = load_config(name, overrides)
    torch.manual_seed(0)
    model = load_model(config if name == "slowfast_tiny" else config.replace(checkpoint=None))
    network = streaming_network(model, config.clip)
    units = network.warmup_units + 3
    inputs = long_clip(config, units)
    stages = [stage for stage, _ in network.stages]
    head_rates = [mean.timing.rate for mean in network.head.means]  # steps per unit at the head
    reference = clip_features(model, inputs, stages)
    if name != "slowfast_tiny":
        spread_head(model.network, reference["s5"], head_rates)
    logits, traces, _ = stream(network, inputs)

    for stage in stages:
        compared = 0
        for call, trace in enumerate(traces):
            outputs, timings = trace[stage]
            for p, (out, timing) in enumerate(zip(outputs, timings)):
                whole = reference[stage][p]
                first = timing.rate * call - timing.lag  # the step index of this call's first output
                for k in range(out.shape[2]):
                    if 0 <= first + k < whole.shape[2]:
                        assert relative(out[:, :, k], whole[:, :, first + k]) <= TOLERANCE, (stage, p, first + k)
                        compared += 1
        assert compared == sum(t.rate * units - t.lag for t in traces[-1][stage][1]), stage  # every step it reached

    # logits: the clip head on the long clip's last-stage features over the window the running mean holds
    last = reference["s5"]
    checked = 0
    for call, out in enumerate(logits):
        end = call + 1 - network.delay_units  # the window ends this many units into the clip
        if call + 1 < network.warmup_units:
            continue
        window = [x[:, :, (end - network.clip_units) * r:end * r] for x, r in zip(last, head_rates)]
        with torch.no_grad():
            expected = model.network.head(window)
        assert relative(out, expected) <= TOLERANCE, call
        checked += 1
    assert checked == units - network.warmup_units + 1
    spread = torch.cat(logits[network.warmup_units - 1:]).std(0).max()
    assert spread > 0.05  # the windows differ, so equal logits are not a coincidence of constant outputs


def test_delay_and_state_per_config_follow_the_kernels():
    tiny = streaming_network(load_model(load_config("slowfast_tiny")), load_config("slowfast_tiny").clip)
    # Fast lags 6 steps (its stem and five blocks have k=3): 2 Slow steps at the head. Slow waits 1 step
    # for the laterals after res2, then its three k=3 blocks (res4, res5) add 3: the head is 4 units
    # (32 frames) behind.
    assert (tiny.unit_frames, tiny.delay_units, tiny.clip_units, tiny.warmup_units) == (8, 4, 4, 8)
    r50 = load_config("slowfast_r50_8x8", SMALL)
    network = streaming_network(load_model(r50.replace(checkpoint=None)), r50.clip)
    assert (network.unit_frames, network.delay_units, network.clip_units) == (8, 12, 8)
    causal = streaming_network(load_model(r50.replace(checkpoint=None)), r50.clip, form=CAUSAL)
    assert causal.delay_units == 0
    layout = network.layout
    assert layout.size == 1 + sum(e.size for e in layout.entries)
    offsets = [e.offset for e in layout.entries]
    assert offsets[0] == 1 and all(a + e.size == b for a, e, b in zip(offsets, layout.entries, offsets[1:]))


def test_the_hop_changes_the_frames_per_call_but_not_the_state():
    config = load_config("slowfast_tiny")
    model = load_model(config)
    one = streaming_network(model, config.clip, units=1)
    two = streaming_network(model, config.clip, units=units_for_hop(one, 16))
    assert two.units == 2 and two.frames_per_call() == {"slow": 2, "fast": 8}
    assert one.layout == two.layout
    inputs = long_clip(config, 12, seed=3)
    logits_one, _, state_one = stream(one, inputs)
    logits_two, _, state_two = stream(two, inputs)
    for k, out in enumerate(logits_two):
        assert relative(out, logits_one[2 * k + 1]) <= 1e-5
    assert relative(state_two, state_one) <= 1e-5


def test_streams_in_a_batch_are_independent_rows_and_zeros_restart_one():
    config = load_config("slowfast_tiny")
    network = streaming_network(load_model(config), config.clip)
    a, b = long_clip(config, 10, seed=1), long_clip(config, 10, seed=2)
    alone_a, _, _ = stream(network, a)
    alone_b_restarted, _, _ = stream(network, [x[:, x.shape[1] // 2:] for x in b])
    state = network.zero_state(2)
    together = []
    with torch.no_grad():
        for call in range(10):
            if call == 5:
                state[1] = 0.0  # stream b had an outage: its row starts again
            frames = [torch.cat([xa[:, call * r:(call + 1) * r], xb[:, call * r:(call + 1) * r]])
                      for xa, xb, r in zip(a, b, network.rates)]
            out, state = network(*frames, state)
            together.append(out)
    for call in range(10):
        assert relative(together[call][0], alone_a[call][0]) <= 1e-5
    for call in range(5, 10):
        assert relative(together[call][1], alone_b_restarted[call - 5][0]) <= 1e-5


def test_causal_form_uses_no_future_step_and_is_the_same_in_any_chunks():
    config = load_config("slowfast_tiny")
    model = load_model(config)
    network = streaming_network(model, config.clip, form=CAUSAL)
    assert network.delay_units == 0 and network.warmup_units == network.clip_units
    inputs = long_clip(config, 8, seed=4)
    logits, traces, _ = stream(network, inputs)
    for trace in traces:  # each call's outputs are this call's own steps
        assert all(t.lag == 0 for _, timings in trace.values() for t in timings)
    whole = streaming_network(model, config.clip, form=CAUSAL, units=8)
    one_call, _, _ = stream(whole, inputs)
    assert relative(one_call[0], logits[-1]) <= 1e-5
    exact = streaming_network(model, config.clip)
    exact_logits, _, _ = stream(exact, inputs)
    assert relative(exact_logits[-1], logits[-1]) > 1e-2  # the same weights, another function


@pytest.mark.parametrize("name, overrides, reason", [
    ("x3d_xs", ["clip.crop_size=64", "clip.short_side=80"], "squeeze-excitation"),
    ("i3d_nln_r50_8x8", NARROW, "non-local"),
])
def test_models_without_a_streaming_form_are_refused_in_one_line(name, overrides, reason):
    config = load_config(name, overrides)
    with pytest.raises(StreamrecError, match=reason) as err:
        streaming_network(load_model(config.replace(checkpoint=None)), config.clip)
    assert "\n" not in str(err.value)


def test_hops_and_frame_counts_that_do_not_fit_are_one_line():
    config = load_config("slowfast_tiny")
    network = streaming_network(load_model(config), config.clip)
    for hop in (4, 12):
        with pytest.raises(StreamrecError, match="multiple of 8"):
            units_for_hop(network, hop)
    with pytest.raises(StreamrecError, match="takes 4 frames a call"):
        network(torch.zeros(1, 1, 96, 96, 3, dtype=torch.uint8), torch.zeros(1, 8, 96, 96, 3, dtype=torch.uint8),
                network.zero_state(1))
    assert isinstance(network.clips.network, SlowFast)


def test_the_streaming_form_shares_the_clip_model_s_parameters():
    config = load_config("slowfast_tiny")
    model = load_model(config)
    network = streaming_network(model, config.clip)
    assert {id(p) for p in network.parameters()} == {id(p) for p in model.parameters()}
    inputs = long_clip(config, network.warmup_units)
    before, _, _ = stream(network, inputs)
    with torch.no_grad():
        model.network.head.projection.bias += 1.0
    after, _, _ = stream(network, inputs)
    assert np.allclose((after[-1] - before[-1]).numpy(), 1.0, atol=1e-5)


@pytest.mark.parametrize("form", FORMS)
def test_a_stem_carries_its_taps_products_and_gives_the_window_s_outputs(form, monkeypatch):
    """`TapSums`: the tiny model's Fast stem (3 taps) carries what later calls still need of each
    tap's products (tap 0's of the last two frames, tap 1's of the last one) at the stem's output
    size, not the last two input frames; every call's stem output and logits are the plain
    window's, which reads those frames again."""
    config = load_config("slowfast_tiny")
    model = load_model(config)
    network = streaming_network(model, config.clip, form=form)
    monkeypatch.setattr(TapSums, "fits", staticmethod(lambda window, conv: False))
    windows = streaming_network(model, config.clip, form=form)
    assert [(e.name, e.shape) for e in network.layout.entries if "stem" in e.name] == [
        ("s1.pathway1_stem.conv.tap0", (4, 2, 48, 48)), ("s1.pathway1_stem.conv.tap1", (4, 1, 48, 48))]
    assert [(e.name, e.shape) for e in windows.layout.entries if "stem" in e.name] == [
        ("s1.pathway1_stem.conv", (3, 2, 96, 96))]
    assert network.layout.size < windows.layout.size
    inputs = long_clip(config, network.warmup_units + 3, seed=5)
    logits, traces, _ = stream(network, inputs)
    expected, expected_traces, _ = stream(windows, inputs)
    for call, (trace, expected_trace) in enumerate(zip(traces, expected_traces)):
        fast_stem, reference = trace["s1"][0][1], expected_trace["s1"][0][1]
        assert reference.abs().max() > 0.1 and relative(fast_stem, reference) <= 1e-5, call
        assert relative(logits[call], expected[call]) <= 1e-5, call


@pytest.mark.parametrize("form, units", [(CAUSAL, 1), (CAUSAL, 2), ("delayed_exact", 1), ("delayed_exact", 2)])
def test_a_narrowing_block_over_one_step_a_unit_carries_partial_sums(monkeypatch, form, units):
    """`TapSums.smaller`: the tiny model's Slow blocks (one step a unit, k=3, 128 channels in, 32
    out) carry the partial sums of their next 2 outputs, 32 channels, not 2 steps of 128 inputs,
    and every call's logits are the plain windows', one unit a call and two. In the delayed-exact
    form the shortcut must then be delayed on its own (its strided output, 128 channels at a
    quarter of the positions, one step): still fewer values than the inputs it shared."""
    config = load_config("slowfast_tiny")
    model = load_model(config)
    network = streaming_network(model, config.clip, form=form, units=units)
    monkeypatch.setattr(TapSums, "smaller", staticmethod(lambda window, conv: False))
    windows = streaming_network(model, config.clip, form=form, units=units)
    entries = {e.name: e.shape for e in network.layout.entries}
    window_entries = {e.name: e.shape for e in windows.layout.entries}
    assert entries["s4.pathway0_res0.branch2.a.sums"] == (32, 2, 12, 12)
    assert window_entries["s4.pathway0_res0.branch2.a"] == (128, 2, 12, 12)
    if form == "delayed_exact":  # with windows the shortcut read its delayed input from the window's buffer
        assert entries["s4.pathway0_res0.join.delay0"] == (128, 1, 6, 6)
        assert not any(".join.delay" in name and "pathway0" in name for name in window_entries)
    else:
        assert not any(".join.delay" in name for name in entries)
    assert not any("pathway1" in name and ".branch2.a.sums" in name for name in entries)  # Fast: 4 steps a unit
    assert network.layout.size < windows.layout.size
    assert_same_logits_every_call(network, windows, config, seed=6)


@pytest.mark.parametrize("form, units", [("delayed_exact", 1), ("delayed_exact", 2), (CAUSAL, 1)])
def test_a_lateral_and_the_next_fast_block_carry_one_buffer_of_the_stream_they_both_read(monkeypatch, form, units):
    """`share_buffer`: each SlowFast lateral and the next stage's first Fast block read the same
    Fast steps, so the state holds them once, as many as the longer window needs (the causal
    form's windows need the same; the delayed-exact form's lateral and block differ, so one of
    them skips the older steps), and every call's logits are those of one buffer each."""
    config = load_config("slowfast_tiny")
    model = load_model(config)
    network = streaming_network(model, config.clip, form=form, units=units)
    monkeypatch.setattr(streaming_module, "share_buffer", lambda windows: None)
    separate = streaming_network(model, config.clip, form=form, units=units)
    names = [e.name for e in network.layout.entries]
    separate_entries = {e.name: e.shape for e in separate.layout.entries}
    for stage in range(2, 6):
        lateral, block = f"s{stage - 1}_fuse.conv_f2s", f"s{stage}.pathway1_res0.branch2.a"
        assert lateral in names and block not in names and block in separate_entries
        shared = next(e.shape for e in network.layout.entries if e.name == lateral)
        assert shared[1] == max(separate_entries[lateral][1], separate_entries[block][1])
    assert network.layout.size < separate.layout.size
    assert_same_logits_every_call(network, separate, config, seed=8)


@pytest.mark.parametrize("form, average_units", [("delayed_exact", None), (CAUSAL, None), (CAUSAL, 2), (CAUSAL, 1)])
def test_a_sequence_in_one_call_gives_the_logits_of_every_call_of_a_stream(form, average_units):
    config = load_config("slowfast_tiny")
    model = load_model(config)
    units = 12
    inputs = long_clip(config, units, seed=5)
    calls, _, _ = stream(streaming_network(model, config.clip, form=form, average_units=average_units), inputs)
    sequence = streaming_network(model, config.clip, form=form, units=units, average_units=average_units)
    with torch.no_grad():
        logits = sequence.sequence_logits(*inputs)
    assert logits.shape == (1, units - sequence.warmup_units + 1, 7)
    expected = torch.stack(calls[sequence.warmup_units - 1:], dim=1)
    assert relative(logits, expected) <= 1e-5
    assert expected.std(dim=1).max() > 0.05  # the windows' logits differ


def test_a_shorter_running_average_carries_less_and_weighs_the_newest_units_more():
    """The causal head averaging 2 of the clip's 4 units: state shrinks by the dropped steps of
    each pathway's per-step features, warm-up stays a clip, and its logits are the head's
    projection of the mean of just the last 2 units' features."""
    config = load_config("slowfast_tiny")
    model = load_model(config)
    whole = streaming_network(model, config.clip, form=CAUSAL)
    half = streaming_network(model, config.clip, form=CAUSAL, average_units=2)
    assert (half.average_units, half.clip_units, half.warmup_units) == (2, 4, whole.warmup_units)
    shapes = [{e.name: e.shape for e in n.layout.entries} for n in (whole, half)]
    assert shapes[0].keys() == shapes[1].keys()
    for name, shape in shapes[0].items():
        if name.endswith("_window"):  # the running mean's carried steps: all but the newest unit's
            rate = whole.rates[int(name.split("pathway")[1][0])]
            assert (shape[1], shapes[1][name][1]) == (4 * rate - 1, 2 * rate - 1)
        else:
            assert shapes[1][name] == shape
    assert half.layout.size < whole.layout.size
    inputs = long_clip(config, 9, seed=3)
    logits_whole, _, _ = stream(whole, inputs)
    logits_half, _, _ = stream(half, inputs)
    assert relative(logits_half[-1], logits_whole[-1]) > 1e-3  # a different average, different logits


def test_only_the_causal_form_averages_less_than_a_clip():
    config = load_config("slowfast_tiny")
    model = load_model(config)
    with pytest.raises(StreamrecError, match="the delayed-exact form averages a whole clip"):
        streaming_network(model, config.clip, average_units=2)
    with pytest.raises(StreamrecError, match="the head can average 1 to 4 units"):
        streaming_network(model, config.clip, form=CAUSAL, average_units=5)
