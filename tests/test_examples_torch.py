"""Dataset examples from tb_convfilters.torch (log_activations / log_sample_activations)
and the Lightning callback, read back with reader.examples from real event files; the
receptive fields from torch.fx checked against the notes' formula and input gradients."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from tb_convfilters import Writer, reader  # noqa: E402
from tb_convfilters._record.receptive_field import ReceptiveField  # noqa: E402
from tb_convfilters.torch import examples as torch_examples  # noqa: E402
from tb_convfilters.torch import (  # noqa: E402
    log_activations,
    log_sample_activations,
    receptive_field,
)

SOBEL_X = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float32)  # vertical edges


def walk_back(layers):
    """The field of one output position through `layers` (kernel, stride, dilation,
    padding before), walked from the output back, as ANALYSIS_NOTES gives it."""
    start, size, jump = 0, 1, 1
    for k, s, d, p in reversed(layers):
        start, size = start * s - p, (size - 1) * s + d * (k - 1) + 1
        jump *= s
    return start, jump, size


def cut_by_hand(image, first, size):
    """image[:, first:first + size, ...] on both spatial axes, zero past the border."""
    pad = max(size) + max(abs(f) for f in first)
    padded = np.pad(image, [(0, 0), (pad, pad), (pad, pad)])
    (r, c), (h, w) = first, size
    return padded[:, pad + r : pad + r + h, pad + c : pad + c + w]


def top_k_by_hand(maps, k):
    """Per channel: (indices, values, positions) of the k inputs with the largest map
    maximum, ties to the lower index; the position is the first maximum (row-major)."""
    n, c = maps.shape[:2]
    flat = maps.reshape(n, c, -1)
    best = flat.max(axis=2)
    where = flat.argmax(axis=2)
    out = []
    for ch in range(c):
        order = sorted(range(n), key=lambda i: (-best[i, ch], i))[:k]
        positions = [np.unravel_index(where[i, ch], maps.shape[2:]) for i in order]
        out.append((order, best[order, ch], np.array(positions)))
    return out


def examples_of(tmp_path, tag, step=None):
    return reader.examples(tmp_path, "run", tag, step)


# ---- planted: Sobel filters on bars ----


class Edges(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 2, 3, padding=1, bias=False)
        with torch.no_grad():
            self.conv1.weight[0, 0] = torch.from_numpy(SOBEL_X)
            self.conv1.weight[1, 0] = torch.from_numpy(SOBEL_X.T.copy())

    def forward(self, x):
        return self.conv1(x)


def bars(n=64, size=24, seed=0):
    """Images each holding one thin bar (vertical or horizontal, alternately) at a random
    place, plus small noise; returns them and (vertical, first, last, across) per image."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 0.01, (n, 1, size, size)).astype(np.float32)
    bars = []
    for i in range(n):
        vertical = i % 2 == 0
        across = int(rng.integers(2, size - 2))
        first = int(rng.integers(2, size - 10))
        last = first + int(rng.integers(5, 8))
        if vertical:
            x[i, 0, first : last + 1, across] += 1
        else:
            x[i, 0, across, first : last + 1] += 1
        bars.append((vertical, first, last, across))
    return torch.from_numpy(x), bars


def test_planted_sobel_filters_pick_their_bars(tmp_path):
    x, planted = bars()
    model = Edges()
    writer = Writer(tmp_path / "run")
    tags = log_sample_activations(writer, model, 0, x, batch_size=20)
    writer.flush()
    assert tags == ["conv1/activation"]
    ex = examples_of(tmp_path, "conv1/activation")
    assert ex.field == ReceptiveField((-1, -1), (1, 1), (3, 3))
    assert ex.indices.shape == (2, 9) and ex.ranked == 64
    assert ex.maps is None  # the field is known: crops, not maps
    np.testing.assert_array_equal(ex.inputs, x.numpy())
    with torch.no_grad():
        brute = np.stack([F.conv2d(xi[None], model.conv1.weight, padding=1)[0] for xi in x])
    for channel, vertical in ((0, True), (1, False)):
        for j, i in enumerate(ex.indices[channel]):
            is_vertical, first, last, across = planted[i]
            assert is_vertical == vertical, (channel, i)
            row, col = ex.positions[channel, j]
            along, side = (row, col) if vertical else (col, row)
            assert first < along < last and side == across - 1  # beside the bar, on its length
            assert ex.values[channel, j] == pytest.approx(brute[i, channel].max(), rel=1e-5)
            assert ex.values[channel, j] == pytest.approx(4, abs=0.2)
            want = cut_by_hand(x.numpy()[i], (row - 1, col - 1), (3, 3))
            np.testing.assert_array_equal(ex.crops[channel, j], want)
    by_hand = top_k_by_hand(brute, 9)
    for channel in range(2):
        np.testing.assert_array_equal(ex.indices[channel], by_hand[channel][0])


# ---- the stack: strides, pooling, dilation ----


def deep_net():
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv2d(2, 3, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(3, 4, 3, padding=0, dilation=2),
    ).double()


DEEP_LAYERS = {"0": [(3, 2, 1, 1)], "3": [(3, 2, 1, 1), (2, 2, 1, 0), (3, 1, 2, 0)]}


def test_deeper_stack_indices_positions_and_crops_are_exact(tmp_path):
    model = deep_net()
    x = torch.randn(100, 2, 21, 21, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    writer = Writer(tmp_path / "run")
    tags = log_sample_activations(writer, model, 5, x, batch_size=16, max_samples=4)
    writer.flush()
    assert sorted(tags) == ["0/activation", "3/activation"]
    with torch.no_grad():
        maps = {"0": model[0](x).numpy(), "3": model(x).numpy()}
    for name, layers in DEEP_LAYERS.items():
        ex = examples_of(tmp_path, f"{name}/activation", 5)
        start, jump, size = walk_back(layers)
        assert ex.field == ReceptiveField((start,) * 2, (jump,) * 2, (size,) * 2)
        assert ex.ranked == 100 and ex.maps is None
        for channel, (indices, values, positions) in enumerate(top_k_by_hand(maps[name], 9)):
            np.testing.assert_array_equal(ex.indices[channel], indices)
            np.testing.assert_allclose(ex.values[channel], values, rtol=1e-12)
            np.testing.assert_array_equal(ex.positions[channel], positions)
            for j, (i, (row, col)) in enumerate(zip(indices, positions, strict=True)):
                first = (start + row * jump, start + col * jump)
                want = cut_by_hand(x.numpy()[i], first, (size, size))
                np.testing.assert_array_equal(ex.crops[channel, j], want)


def gradient_inside(model, name, x, field, positions):
    """Whether the input gradient of the output at each position is non-zero only
    inside the field's box (and non-zero somewhere)."""
    outputs = {}
    module = dict(model.named_modules())[name]
    handle = module.register_forward_hook(lambda m, i, o: outputs.__setitem__("o", o))
    x = x.clone().requires_grad_(True)
    model(x)
    handle.remove()
    for position in positions:
        unit = outputs["o"][0][(slice(None), *position)].sum()  # every channel: one may be 0
        (grad,) = torch.autograd.grad(unit, x, retain_graph=True)
        rows, cols = np.nonzero(grad[0].abs().sum(0).numpy())
        (r0, h), (c0, w) = field.box(position)
        assert len(rows), position
        if not (
            rows.min() >= r0 and rows.max() < r0 + h and cols.min() >= c0 and cols.max() < c0 + w
        ):
            return False
    return True


def test_deeper_stack_field_holds_the_input_gradient():
    model = deep_net()
    x = torch.randn(1, 2, 29, 29, dtype=torch.float64)
    field = receptive_field(model, "3")
    assert field == ReceptiveField((-1, -1), (4, 4), (21, 21))
    assert gradient_inside(model, "3", x, field, [(0, 0), (1, 2), (2, 2)])
    smaller = ReceptiveField(field.start, field.jump, (17, 17))  # the check can fail
    assert not gradient_inside(model, "3", x, smaller, [(1, 2)])


# ---- branches and unknown paths ----


class BasicBlock(nn.Module):
    """torchvision's ResNet block: relu(bn(conv(relu(bn(conv(x))))) + downsample(x))."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
        )

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.downsample(x))


class Cross(nn.Module):
    """x + a wide branch + a tall one: the union is a box neither branch sees alone."""

    def __init__(self):
        super().__init__()
        self.wide = nn.Conv2d(1, 1, (1, 5), padding=(0, 2))
        self.tall = nn.Conv2d(1, 1, (5, 1), padding=(2, 0))

    def forward(self, x):
        return x + self.wide(torch.relu(x)) + self.tall(F.pad(x, (0, 0, 1, -1)))  # 1 down


def test_residual_branches_join_as_the_union(tmp_path):
    torch.manual_seed(4)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), BasicBlock(2, 3, 2)).double().eval()
    main = walk_back([(3, 1, 1, 1), (3, 2, 1, 1), (3, 1, 1, 1)])  # stem, conv1, conv2
    shortcut = walk_back([(3, 1, 1, 1), (1, 2, 1, 0)])  # stem, downsample
    assert main[1] == shortcut[1] == 2
    start = min(main[0], shortcut[0])
    size = max(main[0] + main[2], shortcut[0] + shortcut[2]) - start
    want = ReceptiveField((start,) * 2, (2, 2), (size,) * 2)
    assert receptive_field(model, "1") == want  # the block: not a leaf, traced through
    assert receptive_field(model, "1.downsample") == ReceptiveField((-1, -1), (2, 2), (3, 3))
    x = torch.randn(1, 1, 16, 16, dtype=torch.float64)
    assert gradient_inside(model, "1", x, want, [(0, 0), (3, 4), (7, 7)])

    padded = nn.Sequential(nn.ZeroPad2d((1, 0, 2, 3)), nn.Conv2d(1, 1, 4, padding="same"))
    assert receptive_field(padded, "1") == ReceptiveField((-3, -2), (1, 1), (4, 4))  # 1 before

    cross = Cross()
    assert receptive_field(cross, "") == ReceptiveField((-3, -2), (1, 1), (5, 5))
    assert gradient_inside(
        cross, "tall", torch.randn(1, 1, 9, 9), ReceptiveField((-3, 0), (1, 1), (5, 1)), [(4, 4)]
    )
    assert receptive_field(cross, "wide") == ReceptiveField((0, -2), (1, 1), (1, 5))

    x = torch.randn(30, 1, 12, 12, dtype=torch.float64)
    writer = Writer(tmp_path / "run")
    log_sample_activations(writer, model, 0, x, modules=[BasicBlock], batch_size=7)
    writer.flush()
    ex = examples_of(tmp_path, "1/activation")
    assert ex.field == want and ex.crops.shape == (3, 9, 1, size, size)


def test_unknown_paths_have_no_field_and_examples_keep_their_maps(tmp_path):
    torch.manual_seed(3)
    flat = nn.Sequential(
        nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Unflatten(1, (2, 6, 6)), nn.Conv2d(2, 2, 3)
    )
    assert receptive_field(flat, "0") == ReceptiveField((0, 0), (1, 1), (3, 3))
    assert receptive_field(flat, "3") is None
    assert receptive_field(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Linear(4, 4)), "1") is None
    pooled = nn.Sequential(nn.Conv2d(1, 2, 3), nn.AdaptiveAvgPool2d(2), nn.Conv2d(2, 2, 1))
    assert receptive_field(pooled, "2") is None
    transposed = nn.Sequential(nn.ConvTranspose2d(1, 2, 3), nn.Conv2d(2, 2, 1))
    assert receptive_field(transposed, "1") is None
    with pytest.raises(ValueError, match=r"name='nope' is not a submodule"):
        receptive_field(flat, "nope")

    model = nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1), nn.Upsample(scale_factor=2), nn.Conv2d(2, 3, 3)
    )
    assert receptive_field(model, "2") is None
    x = torch.randn(25, 1, 6, 6)
    writer = Writer(tmp_path / "run")
    log_sample_activations(writer, model, 0, x, batch_size=10)
    writer.flush()
    ex = examples_of(tmp_path, "2/activation")
    assert ex.field is None
    with torch.no_grad():
        maps = model(x).numpy()
    for channel, (indices, values, _) in enumerate(top_k_by_hand(maps, 9)):
        np.testing.assert_array_equal(ex.indices[channel], indices)
        np.testing.assert_allclose(ex.values[channel], values, rtol=1e-6)
        np.testing.assert_array_equal(ex.maps[channel], maps[indices, channel])
        np.testing.assert_array_equal(ex.crops[channel], x.numpy()[indices])
    assert examples_of(tmp_path, "0/activation").maps is None  # before the upsampling


def test_unbatched_inputs_and_inputs_that_are_not_one_tensor(tmp_path):
    model = Edges()
    x, _ = bars(12)
    writer = Writer(tmp_path / "run")
    with log_activations(writer, model, 0):
        for image in x:
            model(image)  # (C, H, W): Conv2d's unbatched input
    writer.flush()
    ex = examples_of(tmp_path, "conv1/activation")
    assert ex.ranked == 12 and ex.inputs.shape == (12, 1, 24, 24)
    np.testing.assert_array_equal(ex.inputs, x.numpy())

    class Scaled(Edges):
        def forward(self, x, scale):
            return self.conv1(x * scale)

    model = Scaled()
    with log_activations(writer, model, 1):
        model(x, torch.tensor(2.0))
    writer.flush()
    ex = examples_of(tmp_path, "conv1/activation", 1)
    assert ex.ranked == 12 and ex.inputs is None and ex.crops is None
    assert ex.indices.shape == (2, 9)


# ---- arguments, errors, budget ----


def test_examples_off_and_bad_values(tmp_path):
    model = Edges()
    x, _ = bars(10)
    writer = Writer(tmp_path / "run")
    log_sample_activations(writer, model, 0, x, examples=0)
    log_sample_activations(writer, model, 1, x, examples=3)
    writer.flush()
    with pytest.raises(reader.NotFoundError):
        examples_of(tmp_path, "conv1/activation", 0)
    assert examples_of(tmp_path, "conv1/activation", 1).indices.shape == (2, 3)
    log_sample_activations(writer, model, 2, x, max_filters=[1])  # the horizontal filter only
    writer.flush()
    ex = examples_of(tmp_path, "conv1/activation", 2)
    with torch.no_grad():
        (horizontal,) = [by_hand for by_hand in top_k_by_hand(model(x).numpy(), 9)[1:]]
    assert ex.channels.tolist() == [1] and ex.indices.shape == (1, 9)
    np.testing.assert_array_equal(ex.indices[0], horizontal[0])
    np.testing.assert_array_equal(ex.positions[0], horizontal[2])
    for bad in (-1, 1.5, True, "9"):
        with pytest.raises(ValueError, match=rf"examples={bad!r} must be an integer"):
            log_sample_activations(writer, model, 2, x, examples=bad)


def test_a_failing_module_examples_warn_once_and_the_others_are_logged(tmp_path, monkeypatch):
    class Fails(torch_examples.TopK):
        def add(self, batch, layout):
            if batch.shape[1] == 3:
                raise RuntimeError("planted failure")
            return super().add(batch, layout)

    monkeypatch.setattr(torch_examples, "TopK", Fails)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Conv2d(2, 3, 3), nn.Conv2d(3, 2, 3))
    x = torch.randn(20, 1, 12, 12)
    writer = Writer(tmp_path / "run")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(2):
            tags = log_sample_activations(writer, model, step, x, batch_size=8)
            assert sorted(tags) == ["0/activation", "1/activation", "2/activation"]
    writer.flush()
    messages = [str(w.message) for w in caught if "planted failure" in str(w.message)]
    assert len(messages) == 1 and "'1/activation'" in messages[0]
    for step in range(2):
        assert examples_of(tmp_path, "0/activation", step).indices.shape == (2, 9)
        assert examples_of(tmp_path, "2/activation", step).indices.shape == (2, 9)
        with pytest.raises(reader.NotFoundError):
            examples_of(tmp_path, "1/activation", step)
    monkeypatch.undo()
    with pytest.raises(RuntimeError, match="planted failure"):
        monkeypatch.setattr(torch_examples, "TopK", Fails)
        log_sample_activations(writer, model, 3, x, raise_errors=True)


def test_the_step_budget_counts_the_examples(tmp_path):
    model = Edges()
    x, _ = bars(16)
    activation = 2 * 2 * 24 * 24 * 4  # max_samples=2 maps of 2 channels, float32
    budget_mb = (activation + 64) / 2**20
    for examples, warned in ((0, False), (9, True)):
        writer = Writer(tmp_path / f"run{examples}")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            log_sample_activations(
                writer, model, 0, x, max_samples=2, budget_mb=budget_mb, examples=examples
            )
        budget = [str(w.message) for w in caught if "budget_mb" in str(w.message)]
        assert bool(budget) == warned, budget
        writer.close()


# ---- Lightning ----


def test_lightning_callback_writes_examples(tmp_path):
    pl = pytest.importorskip("lightning.pytorch")
    from torch.utils.data import DataLoader, TensorDataset

    from tb_convfilters.lightning import FiltersCallback

    class Tiny(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3, padding=1)

        def forward(self, x):
            return self.conv(x)

        def training_step(self, batch, _):
            return self(batch[0]).square().mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    torch.manual_seed(5)
    x, _ = bars(12)
    data = DataLoader(TensorDataset(x), batch_size=6)
    for examples in (4, 0):
        module = Tiny()
        callback = FiltersCallback(
            tmp_path / f"run{examples}", sample_inputs=x, batch_size=5, examples=examples
        )
        pl.Trainer(
            callbacks=[callback],
            accelerator="cpu",
            max_epochs=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        ).fit(module, data)
        if examples:
            ex = reader.examples(tmp_path, "run4", "conv/activation", 0)
            module.eval()
            with torch.no_grad():
                maps = module(x).numpy()
            by_hand = top_k_by_hand(maps, 4)
            for channel in range(2):
                np.testing.assert_array_equal(ex.indices[channel], by_hand[channel][0])
            np.testing.assert_array_equal(ex.inputs, x.numpy())
        else:
            with pytest.raises(reader.NotFoundError):
                reader.examples(tmp_path, "run0", "conv/activation", 0)
    with pytest.raises(ValueError, match=r"examples=-2 must be an integer"):
        FiltersCallback(sample_inputs=x, examples=-2)
