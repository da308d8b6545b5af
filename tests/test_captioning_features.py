"""Tests for the captioning papers' one-time encoder pass (repro/data/vgg19.py, ``repro features``): the
VGG-19 conv5_4 feature cache that FeatureCaptions reads (spec §3: 14 × 14 × 512 → 196 annotation vectors).

Nothing is downloaded: the network is a randomly initialised VGG19Conv54, the images are four synthetic JPEG
and PNG files, and the caption set is a tiny one in Flickr8k's file formats (token file with its ``.jpg.1#k``
quirk, three split lists). The test that runs ``repro features`` on the official Flickr8k files skips when
the data root has no ``flickr8k`` folder.
"""

from __future__ import annotations

import io
import json
import shutil
import urllib.error

import numpy as np
import pytest
import torch
from PIL import Image
from rich.console import Console
from torch import nn

from papers.show_attend_tell.model import ShowAttendTell
from repro import cli
from repro.data import DataError, data_root, sha256, vgg19
from repro.data.captioning import FEATURE_SHAPE, FeatureCaptions
from repro.data.vgg19 import CHECKPOINT, CHECKPOINT_URL, VGG19Conv54, load_image, pretrained_vgg19
from tests.runs import one_cpu_thread

# Image name -> (width, height, mode, split): landscape, portrait, grey, and one smaller than 256 pixels.
IMAGES = {
    "1000_a.jpg": (320, 240, "RGB", "train"),
    "1001_b.png": (200, 300, "RGB", "train"),
    "1002_c.jpg": (260, 260, "L", "valid"),
    "1003_d.jpg": (150, 120, "RGB", "test"),
}
FILES = dict(
    token_file="Flickr8k.token.txt",
    train_list="Flickr_8k.trainImages.txt",
    valid_list="Flickr_8k.devImages.txt",
    test_list="Flickr_8k.testImages.txt",
)


def flickr_like(root) -> tuple:
    """``root/data/toy8k/`` with Flickr8k's text files for IMAGES, and ``root/images/`` with the images."""
    folder, images = root / "data" / "toy8k", root / "images"
    folder.mkdir(parents=True)
    images.mkdir()
    lines = []
    for i, name in enumerate(IMAGES):
        written = f"{name}.1" if i == 2 else name  # Flickr8k's token file names one image '<image>.jpg.1'
        lines += [f"{written}#{k}\tA dog number {i} runs on grass {k} ." for k in range(5)]
    (folder / FILES["token_file"]).write_text("\n".join(lines) + "\n")
    for split, key in (("train", "train_list"), ("valid", "valid_list"), ("test", "test_list")):
        (folder / FILES[key]).write_text("".join(f"{n}\n" for n, v in IMAGES.items() if v[3] == split))
    rng = np.random.default_rng(0)
    for name, (width, height, mode, _) in IMAGES.items():
        shape = (height, width, 3) if mode == "RGB" else (height, width)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(images / name)
    return folder, images


def caption_set(**overrides) -> FeatureCaptions:
    return FeatureCaptions(
        dataset="toy8k", vocab_size=20, batch_size=4, eval_batch_size=2, **FILES, **overrides
    )


def random_vgg19() -> VGG19Conv54:
    """VGG-19 with He-normal convolutions (as VGG's own training began): activations stay O(1) through the 16
    layers, where PyTorch's default init would shrink them toward float16's zero."""
    torch.manual_seed(0)
    encoder = VGG19Conv54()
    for layer in encoder:
        if isinstance(layer, nn.Conv2d):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(layer.bias)
    return encoder


@pytest.fixture(scope="module")
def cached(tmp_path_factory):
    """The toy caption set after one pass: (root, images folder, encoder, the pass's record)."""
    root = tmp_path_factory.mktemp("features")
    _, images = flickr_like(root)
    encoder = random_vgg19()
    with one_cpu_thread(), pytest.MonkeyPatch.context() as patch:
        patch.setenv("REPRO_DATA", str(root / "data"))
        record = caption_set(images=str(images)).cache_features(encoder=encoder, batch_size=3)
    return root, images, encoder, record


@pytest.fixture
def toy_root(cached, monkeypatch):
    monkeypatch.setenv("REPRO_DATA", str(cached[0] / "data"))
    return cached[0]


# --------------------------------------------------------------------------------------------------
# The network and the preprocessing


def test_the_network_is_vgg19_through_conv5_4_and_its_relu_numbered_like_torchvisions():
    encoder = VGG19Conv54()
    convolutions = [i for i, layer in enumerate(encoder) if isinstance(layer, nn.Conv2d)]
    assert convolutions == [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34]  # conv1_1 .. conv5_4
    assert len(encoder) == 36 and isinstance(encoder[35], nn.ReLU)  # conv5_4's ReLU; no last max-pool
    assert [isinstance(encoder[i], nn.MaxPool2d) for i in (4, 9, 18, 27)] == [True] * 4
    assert encoder[34].in_channels == encoder[34].out_channels == 512


def test_images_are_resized_to_256_on_the_shorter_side_centre_cropped_and_normalised(tmp_path):
    # 512 × 256: already 256 high, so only the crop acts: columns 144..367 and rows 16..239 remain.
    red = np.broadcast_to((np.arange(512) // 2).astype(np.uint8), (256, 512))
    green = np.broadcast_to(np.arange(256, dtype=np.uint8)[:, None], (256, 512))
    pixels = np.stack([red, green, np.zeros_like(red)], axis=2)
    Image.fromarray(pixels).save(tmp_path / "wide.png")
    image = load_image(tmp_path / "wide.png")
    assert image.shape == (3, 224, 224) and image.dtype == torch.float32
    mean, std = torch.tensor(vgg19.IMAGENET_MEAN), torch.tensor(vgg19.IMAGENET_STD)
    rgb = image * std[:, None, None] + mean[:, None, None]
    assert torch.allclose(
        rgb[0, 0] * 255, torch.arange(144, 368).div(2, rounding_mode="floor").float(), atol=1e-3
    )
    assert torch.allclose(rgb[1, :, 0] * 255, torch.arange(16, 240).float(), atol=1e-3)
    assert torch.allclose(rgb[2], torch.zeros(224, 224), atol=1e-5)
    Image.fromarray(pixels[:50, :100]).save(tmp_path / "small.png")  # smaller than 256: enlarged
    assert load_image(tmp_path / "small.png").shape == (3, 224, 224)


def test_an_unreadable_or_missing_image_is_named(tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff not a JPEG")
    with pytest.raises(DataError, match=r"cannot read the image .*broken\.jpg"):
        load_image(tmp_path / "broken.jpg")
    with pytest.raises(DataError, match=r"image missing: .*absent\.jpg"):
        load_image(tmp_path / "absent.jpg")


# --------------------------------------------------------------------------------------------------
# Weights


def offline(url, dst, hash_prefix=None, progress=True):
    """torch.hub.download_url_to_file without a network."""
    raise urllib.error.URLError("[Errno -2] Name or service not known")


def test_missing_weights_name_the_file_the_folder_the_url_and_the_alternative(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(DataError) as err:
        pretrained_vgg19()
    message = str(err.value)
    for part in (
        CHECKPOINT,
        str(tmp_path / "torch" / "hub" / "checkpoints"),
        CHECKPOINT_URL,
        "--weights FILE",
    ):
        assert part in message, part
    with pytest.raises(DataError, match=r"elsewhere\.pth \(--weights names no file\)"):
        pretrained_vgg19(tmp_path / "elsewhere.pth")


def test_a_weights_file_must_be_torchvisions_checkpoint(tmp_path, monkeypatch):
    impostor = tmp_path / CHECKPOINT
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, impostor)
    with pytest.raises(DataError, match=f"does not begin with {vgg19.CHECKPOINT_SHA256_PREFIX}"):
        pretrained_vgg19(impostor)
    # A file in torchvision's layout (features.N and classifier.N) loads its features.N into the network.
    source = random_vgg19()
    state = {f"features.{k}": v for k, v in source.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(2, 3)
    checkpoint = tmp_path / "vgg19-checkpoint.pth"
    torch.save(state, checkpoint)
    monkeypatch.setattr(vgg19, "CHECKPOINT_SHA256_PREFIX", sha256(checkpoint)[:8])
    encoder = pretrained_vgg19(checkpoint)
    assert all(torch.equal(a, b) for a, b in zip(encoder.parameters(), source.parameters(), strict=True))
    assert encoder.weights_file == checkpoint.resolve() and encoder.weights_sha256 == sha256(checkpoint)


# --------------------------------------------------------------------------------------------------
# The cache


def test_the_cache_holds_each_images_196_x_512_conv5_4_grid_row_major_in_float16(cached, toy_root):
    _, images, encoder, record = cached
    folder = toy_root / "data" / "toy8k" / "vgg19_conv5_4"
    assert sorted(p.name for p in folder.glob("*.npy")) == sorted(f"{n}.npy" for n in IMAGES)
    arrays = {name: np.load(folder / f"{name}.npy") for name in IMAGES}
    assert all(a.shape == FEATURE_SHAPE == (196, 512) and a.dtype == np.float16 for a in arrays.values())
    name = "1001_b.png"
    with torch.inference_mode():
        grid = nn.Sequential.forward(encoder, load_image(images / name)[None])[0]  # 512 × 14 × 14
    assert grid.shape == (512, 14, 14) and grid.abs().max() > 0.1
    for row, column in ((0, 0), (0, 13), (5, 2), (13, 13)):
        expected = grid[:, row, column].numpy()
        assert np.allclose(arrays[name][14 * row + column], expected, rtol=2e-3, atol=1e-3)
    assert not np.array_equal(arrays["1000_a.jpg"], arrays["1001_b.png"])
    assert record["complete"] and record["images"] == 4 and record["encoded_by_this_pass"] == 4
    stored = json.loads((folder / "features.json").read_text())
    assert stored["settings"]["weights_sha256"] is None and stored["weights_source"].startswith("random")
    assert (
        stored["settings"]["preprocessing"]["centre_crop"] == 224 and stored["settings"]["dtype"] == "float16"
    )
    assert stored["torch"] == torch.__version__ and stored["images_folder"] == str(images.resolve())


def test_the_data_module_serves_the_cache_and_the_model_trains_on_it(cached, toy_root):
    data = caption_set()
    data.setup()
    folder = data.feature_folder
    test = next(iter(data.evaluation_batches("test")))
    assert test["index"].tolist() == [0] and data.images["test"] == ["1003_d.jpg"]
    expected = np.load(folder / "1003_d.jpg.npy").astype(np.float32)
    assert test["features"].dtype == torch.float32 and np.array_equal(test["features"][0].numpy(), expected)
    assert data.images["valid"] == ["1002_c.jpg"]  # the '.jpg.1' quirk reads as the image it names
    batches = list(data.training_batches(0))
    assert sorted(len(b["features"]) for b in batches) == [2, 4, 4]  # 2 images x 5 captions, 4 a batch
    batch = max(batches, key=lambda b: len(b["features"]))
    assert batch["features"].shape == (4, 196, 512)
    torch.manual_seed(0)
    model = ShowAttendTell(
        vocab_size=len(data.vocabulary),
        word_dim=8,
        hidden_dim=16,
        annotation_dim=512,
        attention_dim=8,
        dropout=0.0,
    )
    loss = model.losses(model.unroll(batch["features"], batch["captions"], batch["lengths"]), sampled=False)
    loss["loss"].backward()
    assert torch.isfinite(loss["loss"]) and model.attention.annotation.weight.grad.abs().sum() > 0


def test_a_second_pass_skips_cached_images_and_resumes_a_partial_cache(
    cached, tmp_path, monkeypatch, one_thread
):
    root, images, encoder, _ = cached
    shutil.copytree(root / "data", tmp_path / "data")
    monkeypatch.setenv("REPRO_DATA", str(tmp_path / "data"))
    folder = tmp_path / "data" / "toy8k" / "vgg19_conv5_4"
    before = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.npy")}
    record = caption_set(images=str(images)).cache_features(encoder=encoder)
    assert record["encoded_by_this_pass"] == 0 and record["complete"]
    assert {p.name: p.stat().st_mtime_ns for p in folder.glob("*.npy")} == before
    (folder / "1002_c.jpg.npy").unlink()  # as if the pass had been killed before this image
    record = caption_set(images=str(images)).cache_features(encoder=encoder)
    assert record["encoded_by_this_pass"] == 1 and (folder / "1002_c.jpg.npy").exists()
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_a_pass_never_adds_to_a_cache_made_otherwise(cached, tmp_path, monkeypatch):
    root, images, encoder, _ = cached
    shutil.copytree(root / "data", tmp_path / "data")
    monkeypatch.setenv("REPRO_DATA", str(tmp_path / "data"))
    folder = tmp_path / "data" / "toy8k" / "vgg19_conv5_4"
    other = random_vgg19()
    other.weights_sha256 = "0" * 64
    with pytest.raises(DataError, match="holds features made with other settings"):
        caption_set(images=str(images)).cache_features(encoder=other)
    (folder / "features.json").unlink()
    with pytest.raises(DataError, match="holds .npy files but no features.json"):
        caption_set(images=str(images)).cache_features(encoder=encoder)


def test_a_broken_image_or_folder_stops_the_pass_naming_it(tmp_path, monkeypatch):
    _, images = flickr_like(tmp_path)
    monkeypatch.setenv("REPRO_DATA", str(tmp_path / "data"))
    (images / "1000_a.jpg").write_bytes(b"\xff\xd8\xff truncated")
    with pytest.raises(DataError, match=r"cannot read the image .*images/1000_a\.jpg"):
        caption_set(images=str(images)).cache_features(encoder=VGG19Conv54())
    with pytest.raises(DataError, match=r"image folder not found: .*nowhere"):
        caption_set(images=str(tmp_path / "nowhere")).cache_features(encoder=VGG19Conv54())
    with pytest.raises(DataError, match="data.images is not set"):
        caption_set().cache_features(encoder=VGG19Conv54())


# --------------------------------------------------------------------------------------------------
# The command


@pytest.mark.skipif(not (data_root() / "flickr8k").exists(), reason=f"no flickr8k folder under {data_root()}")
def test_repro_features_reads_the_experiments_caption_set_and_reports_missing_weights(tmp_path, monkeypatch):
    """The command resolves flickr8k_soft's config (the official files, data.images from --images) and stops
    with the weights message before reading any image."""
    buffer = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=buffer, width=3000, color_system=None))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    argv = ["features", "show_attend_tell", "flickr8k_soft", "--images", str(tmp_path), "--device", "cpu"]
    assert cli.main([*argv, "--set", f"data.features={tmp_path / 'cache'}"]) == 2
    output = buffer.getvalue()
    assert CHECKPOINT in output and "--weights FILE" in output and str(tmp_path / "torch" / "hub") in output
    assert cli.main(["features", "show_attend_tell", "mnist_soft"]) == 2
    assert "reads no cached features" in buffer.getvalue()
