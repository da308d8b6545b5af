"""Tests for papers/ram (data generator, glimpse sensor, hybrid loss, baselines, harness runs) against
specs/ram.md. Tests that read MNIST skip only when the data root has no ``mnist`` folder."""

from __future__ import annotations

import gzip
import json
import shutil

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from papers.ram.data import ClutteredMNIST, add_patches, generate
from papers.ram.model import BaselineModule, GlimpseSensor, RAMModule, gaussian_log_prob
from repro import config as config_lib
from repro.config import ConfigError
from repro.data import DataError, data_root, mnist
from repro.data.mnist import load_mnist, read_idx
from repro.papers import get_paper
from tests import runs

needs_data = pytest.mark.skipif(
    not mnist.mnist_path("train-labels-idx1-ubyte.gz").exists(),
    reason=f"no MNIST under {data_root()}; set REPRO_DATA=../shared/data",
)


@pytest.fixture(scope="module")
def splits():
    return load_mnist()


# --------------------------------------------------------------------------------------------------
# MNIST files and splits (spec §2)


@needs_data
def test_splits_are_the_official_scripts_with_known_labels_and_pixel_mean(splits):
    assert {k: len(y) for k, (_, y) in splits.items()} == {"train": 50_000, "valid": 10_000, "test": 10_000}
    assert splits["train"][1][:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert splits["test"][1][:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    counts = np.bincount(splits["test"][1], minlength=10).tolist()
    assert counts == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    all_train = np.concatenate([splits["train"][0], splits["valid"][0]])
    assert all_train.mean() / 255 == pytest.approx(0.1306604762738429, abs=1e-12)
    assert all_train.max() == 255  # so "scale by 1/max" is /255


def copy_mnist(tmp_path, monkeypatch):
    folder = tmp_path / "mnist"
    shutil.copytree(mnist.mnist_path("x").parent, folder)
    monkeypatch.setenv("REPRO_DATA", str(tmp_path))
    return folder


@needs_data
def test_corrupt_file_names_the_file_the_expected_sha_and_the_url(tmp_path, monkeypatch):
    folder = copy_mnist(tmp_path, monkeypatch)
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(b"corrupt")
    sha = mnist.FILES["t10k-labels-idx1-ubyte.gz"]
    with pytest.raises(DataError, match=f"t10k-labels-idx1-ubyte.gz: expected sha256 {sha}.*yann.lecun.com"):
        load_mnist()


def test_missing_file_without_internet_names_the_url_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_DATA", str(tmp_path))
    monkeypatch.setattr(mnist, "URL", "http://127.0.0.1:9/")  # nothing listens there
    with pytest.raises(DataError, match="http://127.0.0.1:9/train-images-idx3-ubyte.gz.*set REPRO_DATA"):
        load_mnist()


def test_idx_reader_checks_the_magic_number_and_the_length(tmp_path):
    good = tmp_path / "labels.gz"
    with gzip.open(good, "wb") as f:
        f.write(np.array([2049, 3], dtype=">u4").tobytes() + bytes([7, 8, 9]))
    assert read_idx(good, mnist.LABEL_MAGIC).tolist() == [7, 8, 9]
    with pytest.raises(DataError, match="magic number 2049, expected 2051"):
        read_idx(good, mnist.IMAGE_MAGIC)
    short = tmp_path / "short.gz"
    with gzip.open(short, "wb") as f:
        f.write(np.array([2049, 5], dtype=">u4").tobytes() + bytes([1]))
    with pytest.raises(DataError, match="truncated"):
        read_idx(short, mnist.LABEL_MAGIC)


# --------------------------------------------------------------------------------------------------
# The generator's rules (spec §2.2)


def test_without_clutter_the_canvas_is_the_digit_at_a_uniform_corner():
    rng = np.random.default_rng(0)
    digits = rng.integers(1, 256, (5, 28, 28), dtype=np.uint8)
    canvases, corners = generate(digits, np.arange(5).repeat(400), 60, 0, rng)
    for canvas, (y, x), d in zip(canvases[:5], corners[:5], np.arange(5).repeat(400)[:5], strict=True):
        assert np.array_equal(canvas[y : y + 28, x : x + 28], digits[d])
        assert canvas.sum(dtype=np.int64) == digits[d].sum(dtype=np.int64)
    assert corners.min() == 0 and corners.max() == 60 - 28  # the placement range {0..W-28}, both ends
    plain, at = generate(digits, np.arange(5), 28, 0, rng)
    assert np.array_equal(plain, digits) and not at.any()  # 28x28 MNIST is the digit itself
    # ... returned without the adds: the canvases, dtype and random stream of the general rule.
    targets, rng, general_rng = rng.integers(0, 5, 50), np.random.default_rng(2), np.random.default_rng(2)
    corner = general_rng.integers(0, 1, (50, 2))
    general = np.zeros((50, 28, 28), dtype=np.int16)
    add_patches(general, digits[targets].astype(np.int16), corner[:, 0], corner[:, 1])
    plain, at = generate(digits, targets, 28, 0, rng)
    assert plain.dtype == np.uint8 and np.array_equal(plain, general) and np.array_equal(at, corner)
    assert rng.random() == general_rng.random()


def test_clutter_is_added_8x8_crops_then_clipped_and_the_digit_added_on_top():
    rng = np.random.default_rng(1)
    ones = np.ones((3, 28, 28), dtype=np.uint8)
    blank = np.zeros((1, 28, 28), dtype=np.uint8)
    sources = np.concatenate([blank, ones])  # target 0 is blank: what remains is the clutter
    canvases, _ = generate(sources, np.zeros(2000, dtype=int), 60, 4, rng)
    pieces_from_blank = canvases.reshape(2000, -1).sum(1)
    # Each piece adds an 8x8 block of 1s (0s when the blank image is drawn): sums are multiples of 64.
    assert set(np.unique(pieces_from_blank % 64)) == {0} and pieces_from_blank.max() == 4 * 64
    bright = np.full((2, 28, 28), 200, dtype=np.uint8)
    clipped, corners = generate(bright, np.zeros(300, dtype=int), 60, 8, rng)
    assert clipped.max() == 255  # overlapping pieces sum past 1 and are clipped
    y, x = corners[0]
    assert (clipped[0, y : y + 28, x : x + 28] >= 200).all()  # the digit is never dimmed


@needs_data
def test_fixed_sets_do_not_depend_on_the_run_but_training_canvases_do():
    a = ClutteredMNIST(canvas=60, distractors=4, batch_size=10, limit=50, seed=1)
    b = ClutteredMNIST(canvas=60, distractors=4, batch_size=10, limit=50, seed=2)
    for dm in (a, b):
        dm.setup()
    assert np.array_equal(a.fixed_set("test")["canvases"], b.fixed_set("test")["canvases"])
    assert np.array_equal(a.fixed_set("test")["starts"], b.fixed_set("test")["starts"])
    assert not np.array_equal(a.fixed_set("test")["canvases"], a.fixed_set("valid")["canvases"])
    first = next(iter(a.training_batches(0)))
    assert not torch.equal(first["images"], next(iter(b.training_batches(0)))["images"])
    assert not torch.equal(first["images"], next(iter(a.training_batches(1)))["images"])
    assert torch.equal(first["images"], next(iter(a.training_batches(0)))["images"])
    assert (
        first["images"].shape == (10, 1, 60, 60) and 0 <= first["images"].min() <= first["images"].max() <= 1
    )
    assert (first["start"].abs() <= 1).all()
    epoch = list(a.training_batches(0))
    assert sorted(torch.cat([b["labels"] for b in epoch]).tolist()) == sorted(a.splits["train"][1].tolist())


# --------------------------------------------------------------------------------------------------
# The glimpse sensor (spec §3)


def test_sensor_cuts_the_patch_centred_at_the_mapped_pixel_and_pools_each_scale():
    image = torch.arange(28 * 28, dtype=torch.float32).view(1, 1, 28, 28)
    sensor = GlimpseSensor(size=4, scales=3)
    location = torch.tensor([[0.0, -0.5]])  # x = 0 -> column 14; y = -0.5 -> row 7
    out = sensor(image, location).view(3, 4, 4)
    assert torch.equal(out[0], image[0, 0, 5:9, 12:16])
    assert torch.allclose(out[1], F.avg_pool2d(image[:, :, 3:11, 10:18], 2)[0, 0])
    # Scale 3 (16 px) reaches above the image (rows -1..14): the missing row counts as zeros.
    padded = F.pad(image, (0, 0, 1, 0))[:, :, 0:16, 6:22]
    assert torch.allclose(out[2], F.avg_pool2d(padded, 4)[0, 0])


def test_sensor_is_batched_and_zero_outside_the_image():
    torch.manual_seed(0)
    images = torch.rand(6, 1, 60, 60)
    locations = torch.rand(6, 2) * 2 - 1
    sensor = GlimpseSensor(size=12, scales=3)
    batched = sensor(images, locations)
    one_by_one = torch.cat([sensor(images[i : i + 1], locations[i : i + 1]) for i in range(6)])
    assert torch.equal(batched, one_by_one)
    corner = sensor(torch.ones(1, 1, 60, 60), torch.tensor([[-1.0, -1.0]])).view(3, 12, 12)
    assert corner[0, :6, :].sum() == 0 and corner[0, 6:, 6:].min() == 1  # centred on pixel (0, 0)


def test_a_reach_below_one_keeps_the_glimpse_centres_in_the_middle_of_the_canvas():
    """pixel = floor((reach · l + 1) / 2 · W): at reach 0.5 on 60x60, l = ±1 is pixel 15 / 45 (the range of
    a 28-pixel digit's centre is 14..46), and l = 0 is still the centre."""
    images = torch.arange(60 * 60, dtype=torch.float32).view(1, 1, 60, 60)
    near, far = GlimpseSensor(size=2, scales=1, reach=0.5), GlimpseSensor(size=2, scales=1)
    for location, row, col in (([1.0, -1.0], 15, 45), ([0.0, 0.0], 30, 30), ([-1.0, 0.5], 37, 15)):
        patch = near(images, torch.tensor([location])).view(2, 2)
        assert torch.equal(patch, images[0, 0, row - 1 : row + 1, col - 1 : col + 1]), location
    assert torch.equal(near(images, torch.tensor([[0.5, 0.5]])), far(images, torch.tensor([[0.25, 0.25]])))
    with pytest.raises(ValueError, match=r"model.location_reach must be in \(0, 1\], not 0"):
        RAMModule(location_reach=0)


def test_a_glimpse_wider_than_the_canvas_is_refused_when_the_config_is_read():
    path = get_paper("ram").config_path("mnist_ram6", "smoke")
    with pytest.raises(ConfigError, match=r"widest glimpse patch \(8 x 2\^2 = 32 pixels\).*28-pixel canvas"):
        config_lib.load(path, ["model.scales=3"])
    config_lib.load(path, ["model.scales=2"])  # 16 px fits
    with pytest.raises(ConfigError, match="model.canvas 60 differs from data.canvas 28"):
        config_lib.load(get_paper("ram").config_path("mnist_fc256", "smoke"), ["model.canvas=60"])


# --------------------------------------------------------------------------------------------------
# The hybrid loss (spec §3, pitfalls 3-4)


def gradients(module, loss) -> dict[str, torch.Tensor | None]:
    module.zero_grad(set_to_none=True)
    loss.backward(retain_graph=True)
    return {name: p.grad for name, p in module.named_parameters()}


def nonzero(grad) -> bool:
    return grad is not None and bool(grad.abs().sum() > 0)


@pytest.mark.parametrize("reference", [False, True], ids=["fast", "reference"])
@pytest.mark.parametrize("detach_core", [False, True])
def test_the_classification_loss_never_reaches_the_location_network(detach_core, reference):
    torch.manual_seed(0)
    module = RAMModule(glimpses=4, locator_detach_core=detach_core)
    images, labels = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    rollout = module.rollout(images, torch.rand(8, 2) * 2 - 1, sample=True, reference=reference)
    parts = module.hybrid_loss(rollout, labels, reference=reference)
    ce = gradients(module, parts["ce"])
    assert not nonzero(ce["locator.weight"]) and not nonzero(ce["baseline.weight"])
    assert nonzero(ce["core_hidden.weight"]) and nonzero(ce["what.weight"])
    reinforce = gradients(module, parts["reinforce"])
    assert nonzero(reinforce["locator.weight"]) and not nonzero(reinforce["baseline.weight"])
    assert nonzero(reinforce["core_input.weight"]) is not detach_core  # the paper's coupling, or the port's
    baseline = gradients(module, parts["baseline"])
    assert nonzero(baseline["baseline.weight"])
    assert not any(nonzero(g) for name, g in baseline.items() if not name.startswith("baseline"))


# --------------------------------------------------------------------------------------------------
# The fast path (rollout and hybrid_loss's default): equal to the reference path bit for bit


def fast_and_reference(module, images, start, labels, sample=True):
    """Per path: the rollout, the loss parts, and each part's parameter gradients (None where none)."""
    results = []
    for reference in (True, False):
        generator = torch.Generator().manual_seed(7)
        rollout = module.rollout(images, start, sample=sample, generator=generator, reference=reference)
        parts = module.hybrid_loss(rollout, labels, reference=reference)
        grads = {}
        for name in ("loss", "ce", "reinforce", "baseline"):
            if parts[name].requires_grad:
                grads[name] = gradients(module, parts[name])
        results.append((rollout, parts, grads))
    return results


def assert_identical(reference, fast):
    (rollout_a, parts_a, grads_a), (rollout_b, parts_b, grads_b) = reference, fast
    for field, a, b in zip(rollout_a._fields, rollout_a, rollout_b, strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b), field
    for name in parts_a:
        assert torch.equal(parts_a[name], parts_b[name]), name
    assert grads_a.keys() == grads_b.keys()
    for part, grads in grads_a.items():
        for name, a in grads.items():
            b = grads_b[part][name]
            assert (a is None) == (b is None), (part, name)
            assert a is None or torch.equal(a, b), (part, name, (a - b).abs().max().item())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("detach_core", [False, True])
@pytest.mark.parametrize(
    ("canvas", "size", "scales"), [(28, 8, 1), (60, 12, 3)], ids=["mnist28", "clutter60"]
)
def test_fast_path_equals_the_reference_bit_for_bit(canvas, size, scales, detach_core, dtype):
    """Values, the four loss parts and every parameter's gradient of each part (None where autograd leaves
    None), in float32 and float64: equal, not close (the fast path runs the same kernels in the same
    order)."""
    torch.manual_seed(canvas)
    module = RAMModule(glimpses=6, glimpse_size=size, scales=scales, locator_detach_core=detach_core)
    module = module.to(dtype)
    images = torch.rand(20, 1, canvas, canvas, dtype=dtype)
    images[:3] = 0  # and dark canvases: ReLUs at zero
    start = torch.rand(20, 2, dtype=dtype) * 2.4 - 1.2  # some at and beyond the edges: clipped, padded
    labels = torch.randint(0, 10, (20,))
    reference, fast = fast_and_reference(module, images, start, labels)
    assert set(reference[2]) == {"loss", "ce", "reinforce", "baseline"}
    assert_identical(reference, fast)
    assert_identical(*fast_and_reference(module, images, start, labels, sample=False))


def test_fast_path_equals_the_reference_bit_for_bit_at_a_reach_below_one():
    torch.manual_seed(5)
    module = RAMModule(glimpses=4, glimpse_size=12, scales=3, location_std=0.22, location_reach=0.53)
    images, labels = torch.rand(20, 1, 60, 60), torch.randint(0, 10, (20,))
    start = torch.rand(20, 2) * 2.4 - 1.2
    assert_identical(*fast_and_reference(module, images, start, labels))
    assert_identical(*fast_and_reference(module, images, start, labels, sample=False))
    sensor, locations = module.sensor, torch.cat([torch.rand(16, 2) * 2.4 - 1.2, -torch.ones(4, 2)])
    assert torch.equal(sensor.look(sensor.prepare(images), locations), sensor(images, locations))


@pytest.mark.parametrize("glimpses", [1, 2])
def test_fast_path_equals_the_reference_with_one_or_two_glimpses(glimpses):
    torch.manual_seed(glimpses)
    module = RAMModule(glimpses=glimpses, location_std=0.22)
    images, labels = torch.rand(5, 1, 28, 28), torch.randint(0, 10, (5,))
    assert_identical(*fast_and_reference(module, images, torch.rand(5, 2) * 2 - 1, labels))


def test_fast_path_trains_as_the_reference_does(one_thread):
    """Ten SGD steps (the fast path with foreach SGD, the reference with the per-tensor loop) on one batch:
    the same weights bit for bit."""
    torch.manual_seed(3)
    reference = RAMModule(glimpses=4, glimpse_size=12, scales=3)
    fast = RAMModule(glimpses=4, glimpse_size=12, scales=3)
    fast.load_state_dict(reference.state_dict())
    images, labels, start = torch.rand(20, 1, 60, 60), torch.arange(20) % 10, torch.zeros(20, 2)
    for module, is_reference in ((reference, True), (fast, False)):
        optimizer = torch.optim.SGD(module.parameters(), lr=0.05, momentum=0.9, foreach=not is_reference)
        generator = torch.Generator().manual_seed(0)
        for _ in range(10):
            rollout = module.rollout(images, start, sample=True, generator=generator, reference=is_reference)
            loss = module.hybrid_loss(rollout, labels, reference=is_reference)["loss"]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    for (name, a), b in zip(reference.state_dict().items(), fast.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_fast_sensor_equals_the_reference_at_edges_and_nan():
    torch.manual_seed(4)
    for canvas, size, scales in ((28, 8, 1), (60, 12, 3), (28, 7, 2), (100, 12, 3)):
        sensor = GlimpseSensor(size, scales)
        images = torch.rand(9, 1, canvas, canvas)
        prepared = sensor.prepare(images)
        corners = torch.tensor([[1.0, 1.0], [-1.0, -1.0], [1.0, -1.0], [float("nan"), 0.5], [3.0, -7.0]])
        for locations in (torch.rand(9, 2) * 2.4 - 1.2, torch.cat([corners, torch.rand(4, 2)])):
            assert torch.equal(sensor.look(prepared, locations), sensor(images, locations))


def test_reinforce_is_minus_advantage_times_log_policy_with_the_baseline_detached():
    torch.manual_seed(1)
    module = RAMModule(glimpses=3, location_std=0.2)
    images, labels = torch.rand(5, 1, 28, 28), torch.randint(0, 10, (5,))
    rollout = module.rollout(images, torch.zeros(5, 2), sample=True)
    reward = (rollout.logits.argmax(-1) == labels).float()
    parts = module.hybrid_loss(rollout, labels)
    expected = -((reward[:, None] - rollout.baselines) * rollout.log_probs).sum(1).mean()
    assert parts["reinforce"].item() == pytest.approx(expected.item())
    assert parts["baseline"].item() == pytest.approx(
        (rollout.baselines - reward[:, None]).pow(2).sum(1).mean().item()
    )
    assert rollout.log_probs.shape == rollout.baselines.shape == (5, 2)  # N-1 sampled locations
    assert rollout.locations.shape == (5, 3, 2) and torch.equal(rollout.locations[:, 0], torch.zeros(5, 2))


def test_gaussian_log_prob_matches_torch_distributions():
    x, mean = torch.tensor([[0.3, -0.2]]), torch.tensor([[0.1, 0.0]])
    expected = torch.distributions.Normal(mean, 0.17).log_prob(x).sum(-1)
    assert torch.allclose(gaussian_log_prob(x, mean, 0.17), expected)


def test_deterministic_rollouts_look_at_the_policy_mean():
    torch.manual_seed(2)
    module = RAMModule(glimpses=3)
    images = torch.rand(4, 1, 28, 28)
    a = module.rollout(images, torch.zeros(4, 2), sample=False)
    b = module.rollout(images, torch.zeros(4, 2), sample=False)
    assert torch.equal(a.locations, b.locations) and (a.log_probs == 0).all()
    assert (a.locations.abs() < 1).all()  # tanh-squashed means


def test_learning_rate_falls_linearly_to_zero_over_the_epochs():
    module = RAMModule(lr=0.1, optimizer="sgd")
    module.trainer = L.Trainer(max_epochs=4, logger=False, enable_checkpointing=False)
    config = module.configure_optimizers()
    optimizer, schedule = config["optimizer"], config["lr_scheduler"]["scheduler"]
    rates = []
    for _ in range(4):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert rates == pytest.approx([0.1, 0.075, 0.05, 0.025])


def test_baselines_have_the_papers_layer_sizes():
    fc = BaselineModule("fc", canvas=28, hidden=256)
    assert sum(p.numel() for p in fc.parameters()) == 784 * 256 + 256 + 256 * 256 + 256 + 256 * 10 + 10
    for canvas in (28, 60, 100):
        conv = BaselineModule("conv", canvas=canvas)
        assert conv.classify({"images": torch.zeros(2, 1, canvas, canvas)}).shape == (2, 10)
    with pytest.raises(ValueError, match="fc or conv"):
        BaselineModule("rnn")


def test_overfits_one_batch(one_thread):
    """20 noise images: every glimpse, even the first at the fixed start, sees a patch unique to its image."""
    torch.manual_seed(0)
    module = RAMModule(glimpses=4, locator_detach_core=True)
    images = torch.rand(20, 1, 28, 28)
    labels = torch.arange(20) % 10
    start = torch.zeros(20, 2)
    optimizer = torch.optim.Adam(module.parameters(), lr=3e-3)
    for _ in range(300):
        loss = module.hybrid_loss(module.rollout(images, start, sample=True), labels)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    logits = module.rollout(images, start, sample=False).logits
    assert (logits.argmax(-1) == labels).all()


def fit_and_read_log(module, root, log_every: int, per_step: bool = False, stop_at=None) -> list[dict]:
    """Two epochs of 5 batches of 20 (smoke-sized: 100 digits) through a real lightning.Trainer with a
    CSV logger, SGD and the linear decay; ``per_step``: the per-step logging of 06ae4b4 (the bench's
    switch); ``stop_at``: a callback asks the trainer to stop after that batch of the first epoch. Returns
    the CSV's training rows."""
    import csv

    from lightning.pytorch.loggers import CSVLogger

    class Stop(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            trainer.should_stop = trainer.should_stop or batch_idx == stop_at

    module.log_every_step = per_step
    L.seed_everything(1, verbose=False)
    trainer = L.Trainer(
        max_epochs=2,
        callbacks=[Stop()],
        logger=CSVLogger(root, name="csv", version=""),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=log_every,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        accelerator="cpu",
    )
    trainer.fit(module, datamodule=ClutteredMNIST(batch_size=20, limit=100))
    with (root / "csv" / "metrics.csv").open() as file:
        return [row for row in csv.DictReader(file) if row.get("train/loss", row.get("train/ce"))]


@needs_data
@pytest.mark.parametrize("model", ["ram", "fc"])
def test_windowed_logging_trains_the_same_weights_and_logs_the_windows_mean(model, tmp_path, one_thread):
    """Through a real Trainer: the weights after 10 steps are those of 06ae4b4's per-step logging bit for
    bit, and the loggers get each window's mean at the steps Lightning writes (every 3rd optimizer step:
    steps 2, 5 and 8, counted from 0), the window restarting with each epoch (steps 5-9 are epoch 1)."""

    def make():
        torch.manual_seed(0)
        if model == "ram":
            return RAMModule(glimpses=3, location_std=0.22, lr=0.01)
        return BaselineModule("fc", lr=0.01)

    key = "train/loss" if model == "ram" else "train/ce"
    old, new, every_step = make(), make(), make()
    old_rows = fit_and_read_log(old, tmp_path / "old", log_every=3, per_step=True)
    new_rows = fit_and_read_log(new, tmp_path / "new", log_every=3)
    step_rows = fit_and_read_log(every_step, tmp_path / "step", log_every=1, per_step=True)
    for other in (new, every_step):
        for (name, a), b in zip(old.state_dict().items(), other.state_dict().values(), strict=True):
            assert torch.equal(a, b), name
    assert [int(r["step"]) for r in new_rows] == [int(r["step"]) for r in old_rows] == [2, 5, 8]
    assert set(new_rows[0]) == set(old_rows[0])  # the same columns
    per_step = [float(r[key]) for r in step_rows]  # each step's value, steps 0-9
    assert len(per_step) == 10
    for row, window in zip(new_rows, ([0, 1, 2], [5], [6, 7, 8]), strict=True):
        assert float(row[key]) == pytest.approx(np.mean([per_step[i] for i in window]), rel=1e-6)
    for row in old_rows:  # the old logging wrote the step's own value
        assert float(row[key]) == per_step[int(row["step"])]


@needs_data
def test_windowed_logging_logs_the_window_when_the_trainer_stops(tmp_path, one_thread):
    """A stop asked after step 3 (a callback's should_stop): Lightning writes that step's row too, and it
    holds the window since the log point at step 2 (step 3 alone), as the per-step logging's did, not the
    log point's values again."""

    def make():
        torch.manual_seed(0)
        return RAMModule(glimpses=3, location_std=0.22, lr=0.01)

    old_rows = fit_and_read_log(make(), tmp_path / "old", log_every=3, per_step=True, stop_at=3)
    new_rows = fit_and_read_log(make(), tmp_path / "new", log_every=3, stop_at=3)
    assert [int(r["step"]) for r in new_rows] == [int(r["step"]) for r in old_rows] == [2, 3]
    for key in ("train/loss", "train/ce", "train/reinforce", "train/baseline", "train/reward"):
        assert float(new_rows[1][key]) == float(old_rows[1][key]), key


# --------------------------------------------------------------------------------------------------
# Harness runs


@needs_data
def test_smoke_run_writes_a_record_with_checkpoints_logs_and_glimpse_paths(tmp_path, harness_state):
    record = runs.smoke("ram", "mnist_ram6", tmp_path)
    metrics = record["metrics"]
    assert metrics["test_images"] == 400 and 0 <= metrics["test_error"] <= 100
    assert {"test_error_sampled", "test_error_mc"} <= set(metrics)
    assert metrics["val_error"] == min(h["val/error"] for h in record["details"]["val_curve"])
    paths = record["details"]["glimpse_paths"]
    assert np.array(paths["locations"]).shape == (16, 6, 2)
    assert {d["sha256"] for d in record["data"]} == set(mnist.FILES.values())
    work = tmp_path / "ram" / "mnist_ram6" / "smoke" / "seed1"
    assert sorted(p.name for p in (work / "checkpoints").glob("*.ckpt")) == ["epoch000.ckpt", "epoch001.ckpt"]
    assert "train/reinforce" in (work / "csv" / "metrics.csv").read_text().splitlines()[0]


@needs_data
@pytest.mark.slow
def test_baseline_smoke_run_on_cluttered_canvases(tmp_path, harness_state):
    record = runs.smoke("ram", "cluttered60_conv", tmp_path)
    assert record["metrics"]["test_images"] == 400 and "test_error_mc" not in record["metrics"]


@needs_data
@pytest.mark.slow
def test_resume_equals_uninterrupted(tmp_path, harness_state):
    # The schedule's length is named: the run stopped after 2 epochs must anneal as the 3-epoch one does.
    resumed, straight = runs.resumed_and_straight("ram", "mnist_ram6", tmp_path, ["model.decay_epochs=3"])
    assert resumed["metrics"] == straight["metrics"]
    assert resumed["details"] == straight["details"]


@needs_data
@pytest.mark.slow
def test_ddp_two_cpu_processes_score_every_test_canvas_once(tmp_path, harness_state):
    record = runs.ddp_smoke("ram", "mnist_ram6", tmp_path)
    assert record["metrics"]["test_images"] == 400
    assert 0 <= record["metrics"]["test_error"] <= 100


@needs_data
def test_figures_from_a_record(tmp_path, harness_state):
    from papers.ram import figures

    runs.smoke("ram", "mnist_ram6", tmp_path, ["trainer.max_epochs=1"])
    folder = tmp_path / "ram"
    (folder / "mnist_ram6" / "smoke" / "aggregate.json").write_text('{"records": ["seed1.json"]}')
    made = {p.name for p in figures.make_figures(folder, "smoke")}
    assert made == {
        "samples.png",
        "error_curve_smoke.png",
        "glimpses_mnist_ram6_smoke.png",
        "episode_mnist_ram6_smoke.gif",
    }


def test_protocol_table_shows_the_three_protocols_the_verdict_and_the_baselines(tmp_path):
    from papers.ram import figures

    def aggregate(experiment, metrics, records=()):
        folder = tmp_path / experiment / "full"
        folder.mkdir(parents=True)
        for i, record in enumerate(records, 1):
            (folder / f"seed{i}.json").write_text(json.dumps(record))
        names = [f"seed{i}.json" for i in range(1, len(records) + 1)]
        (folder / "aggregate.json").write_text(json.dumps({"metrics": metrics, "records": names}))

    def metric(key, values, **extra):
        mean, std = float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        return {"key": key, "mean": mean, "std": std, "n": len(values), **extra}

    assert figures.write_protocols(tmp_path, "full") is None  # nothing committed: no table
    compared = {"published": 1.84, "evidence": "secondary", "verdict": "MISS (known)"}
    aggregate(
        "translated_ram8",
        [
            metric("test_error", [3.0, 4.0], **compared),
            metric("test_error_sampled", [5.0, 5.0]),
            metric("test_error_mc", [1.5, 2.5]),
        ],
        # one seed traced one canvas: 3 of its 4 chosen glimpses at a corner
        [
            {"details": {"glimpse_paths": {"locations": [[[0, 0], [1, 1], [-1, 1], [0.5, 1], [-1, -1]]]}}},
            {"details": {}},
        ],
    )
    aggregate("translated_conv", [metric("test_error", [2.25])])
    table = figures.write_protocols(tmp_path, "full").read_text()
    assert "| translated_ram8 | 2 | **3.50 ± 0.71** | 5.00 ± 0.00 | 2.00 ± 0.71 | 1.84 [secondary] |" in table
    assert table.rstrip().endswith("| MISS (known) | – | 2.25 | 75% |")  # FC-256 not run, conv 2.25


def test_corner_share_counts_the_chosen_glimpses_saturated_in_both_coordinates():
    from papers.ram import figures

    def traced(*paths):
        return {"details": {"glimpse_paths": {"locations": [list(p) for p in paths]}}}

    # the first glimpse is random, never counted (here it sits at a corner); one edge alone is not a corner
    first = traced([(1.0, 1.0), (-1.0, 0.96), (0.2, 0.1), (0.97, -1.0)])
    second = traced([(0.0, 0.0), (-0.99, 1.0), (1.0, 0.5), (0.0, 0.0)])
    assert figures.corner_share([first, second]) == 3 / 6
    assert figures.corner_share([{"details": {}}]) is None  # no record kept its paths


def test_figures_draw_glimpses_where_the_runs_reach_put_them():
    from papers.ram import figures

    record = {
        "config": {"model": {"init_args": {"location_reach": 0.5}}},
        "details": {"glimpse_paths": {"locations": [[[0.0, 0.0], [1.0, -3.0]]]}},
    }
    assert figures.canvas_locations(record, 0).tolist() == [[0.0, 0.0], [0.5, -0.5]]
    del record["config"]["model"]["init_args"]["location_reach"]  # records from before the reach: 1
    assert figures.canvas_locations(record, 0).tolist() == [[0.0, 0.0], [1.0, -1.0]]


@needs_data
def test_calibration_cell_clips_scores_its_curve_and_stops_at_its_time_limit(monkeypatch):
    from papers.ram import sweep

    clipped = []
    original = torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(
        torch.nn.utils, "clip_grad_norm_", lambda p, limit: clipped.append(limit) or original(p, limit)
    )
    cell = {
        "task": "mnist",
        "optimizer": "sgd",
        "batch_size": 20,
        "lr": 0.001,
        "sigma": 0.22,
        "detach": False,
        "clip": 0.5,
        "steps": 4,
        "eval_every": 2,
        "seed": 1,
    }
    row = sweep.run_cell(cell)
    assert row["steps_done"] == 4 and row["finite"] and clipped == [0.5] * 4
    assert sorted(row["curve"]) == [2, 4] and row["val_error"] == row["curve"][4]
    stopped = sweep.run_cell({**cell, "clip": 0.0, "steps": 1000, "time_limit": 1e-9})
    assert stopped["steps_done"] == 0 and stopped["curve"] == {}  # already past its time limit: no step


@needs_data
def test_calibration_cell_on_the_annealed_schedule_is_judged_after_its_last_epoch(monkeypatch):
    from papers.ram import sweep

    rates = []
    original = torch.optim.SGD.step

    def step(optimizer, *args, **kwargs):
        rates.append(optimizer.param_groups[0]["lr"])
        return original(optimizer, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", step)
    cell = {"task": "mnist", "optimizer": "sgd", "batch_size": 20, "lr": 0.004, "sigma": 0.22}
    row = sweep.run_cell({**cell, "detach": False, "steps": 0, "epochs": 4, "limit": 40, "seed": 1})
    # 40 digits = 2 steps an epoch; epoch e trains at lr * (1 - e / 4), as the full tier's schedule over 200.
    assert rates == pytest.approx([0.004, 0.004, 0.003, 0.003, 0.002, 0.002, 0.001, 0.001])
    assert row["steps_done"] == 8 and sorted(row["curve"]) == [1, 2, 3, 4]
    assert row["val_error"] == row["curve"][4]


def test_bench_times_both_paths_side_by_side(one_thread):
    from papers.ram import bench

    torch.manual_seed(0)
    batches = [
        {"images": torch.rand(4, 1, 28, 28), "start": torch.rand(4, 2) * 2 - 1, "labels": torch.arange(4)}
        for _ in range(6)
    ]
    run = bench.side_by_side(RAMModule(glimpses=3), batches, warmup=1)
    for path in ("reference", "fast"):
        assert run[path]["steps"] == 6 and run[path]["images"] == 24
        # Only the report's shape: the sensor is timed apart from the step, so on a loaded machine its share
        # of a 6-step run can exceed 1 (timings are the benchmark's business, not a test's).
        assert run[path]["images_per_s"] > 0 and run[path]["sensor_share"] > 0
    # The report rounds seconds to 1 ms and the ratio to 0.001 (a fast machine takes a few ms here): the
    # ratio must lie between what the rounded seconds allow.
    reference, fast, half = run["reference"]["seconds"], run["fast"]["seconds"], 5e-4
    lowest, highest = (reference - half) / (fast + half), (reference + half) / (fast - half)
    assert lowest - half <= run["speedup"] <= highest + half


@needs_data
def test_bench_times_both_training_loops_side_by_side(one_thread, harness_state):
    """The Lightning-loop benchmark: both paths (the old one with the reference path and per-step logging)
    train through repro.train's trainer on the same batches, and the new path's steps without Lightning
    beside them; all end with the same weights bit for bit."""
    from papers.ram import bench

    torch.manual_seed(0)
    module = RAMModule(glimpses=3, location_std=0.22, lr=0.001)
    data = ClutteredMNIST(batch_size=4, limit=40)
    run = bench.loop_side_by_side(module, data, turns=2, steps=3, warmup=1, log_every=2)
    for path in ("old", "new", "step", "step_and_canvases"):
        assert run[path]["steps"] == 6 and run[path]["images"] == 24 and run[path]["images_per_s"] > 0
    assert run["same_weights"] is True and run["speedup"] > 0


def test_gaze_measures_corners_and_the_distance_to_the_digit_in_the_sensors_pixels():
    from papers.ram import gaze

    chosen = np.array([[[0.96, -1.0], [0.96, 0.5], [-0.2, 0.0]]])
    assert gaze.at_corner(chosen).tolist() == [[True, False, False]]
    # GlimpseSensor's floor((reach·l + 1)/2·W) on 60 pixels at reach 0.53: l = ±1 is pixel 45 / 14
    centres = gaze.pixel_centres(np.array([[[1.0, -1.0], [3.0, 0.0]]]), 0.53, 60)
    assert centres.tolist() == [[[45.0, 14.0], [45.0, 30.0]]]
    # a digit whose top-left is row 0, column 19: its centre is x 33, y 14 (12 and 12-by-16 pixels away)
    assert gaze.digit_distance(centres, np.array([[0, 19]])).tolist() == [[12.0, 20.0]]


def test_gaze_refuses_a_folder_without_epoch_checkpoints(tmp_path, capsys):
    from papers.ram import gaze

    run = tmp_path / "ram" / "mnist_ram6" / "full" / "seed1"
    (run / "checkpoints").mkdir(parents=True)
    assert gaze.main([str(run), "--out", str(tmp_path / "out")]) == 2
    assert "not a run folder with epoch checkpoints" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    for epoch in range(7):
        (run / "checkpoints" / f"epoch{epoch:03d}.ckpt").touch()
    assert [e for e, _ in gaze.checkpoints(run, 3)] == [3, 6, 7]  # every 3rd epoch finished, and the last


@needs_data
def test_gaze_follows_a_smoke_run_epoch_by_epoch(tmp_path, harness_state):
    from papers.ram import gaze

    runs.smoke("ram", "mnist_ram6", tmp_path, ["trainer.max_epochs=2"])
    out = tmp_path / "gaze"
    assert (
        gaze.main(
            [str(tmp_path / "ram" / "mnist_ram6" / "smoke" / "seed1"), "--every", "1", "--out", str(out)]
        )
        == 0
    )
    report = json.loads((out / "mnist_ram6_smoke_seed1.json").read_text())
    assert [row["epochs"] for row in report["epochs"]] == [1, 2]
    for row in report["epochs"]:
        assert 0 <= row["at_corner"] <= 1 and 0 <= row["val_error"] <= 100
        assert row["still_distance"] == 0  # 28x28: the digit fills the canvas, its centre is the canvas's
    assert (out / "mnist_ram6_smoke_seed1.png").exists()
