"""The captioning papers' one-time encoder pass: the VGG-19 conv5_4 annotation vectors of every image, cached.

Show, Attend and Tell reads its images through a frozen ImageNet VGG-19: the output of conv5_4, the last
convolution before the last max-pool, 14 × 14 cells of 512 channels for a 224 × 224 image, i.e. L = 196
annotation vectors of D = 512 (spec §3). Scheduled Sampling's COCO experiments read the same features.

* **Network.** ``VGG19Conv54``: configuration E of the VGG paper (3 × 3 convolutions with padding 1, each
  followed by a ReLU; 2 × 2 max-pools of stride 2) through conv5_4 and its ReLU. Its layers are numbered as in
  torchvision's ``vgg19().features``, so torchvision's checkpoint loads into it unchanged. The suite writes
  the 36 layers itself rather than importing torchvision: the features are all it needs, and torchvision's
  compiled extension must match the local torch build exactly.
* **Weights.** torchvision's ImageNet checkpoint (``VGG19_Weights.IMAGENET1K_V1``, the file
  ``vgg19-dcbb9e9d.pth``), from torch's hub cache (downloaded there when absent) or from a file the user
  names; either way its sha256 must begin with the ``dcbb9e9d`` of its name (the hub's convention).
* **Preprocessing.** The checkpoint's own evaluation transform: the shorter side resized to 256 pixels
  (PIL bilinear), the centre 224 × 224 cut out, RGB scaled to [0, 1], normalised by ImageNet's channel mean
  and standard deviation. The spec names no resizing; this is the transform these weights were evaluated with.
* **Cache.** One ``<image>.npy`` per image (196 × 512 float16, the 14 × 14 grid row-major) under the caption
  set's feature folder, each written to a temporary file and renamed, so an interrupted pass leaves only whole
  files and the same command resumes it (cached images are skipped). float16 halves the disk (COCO's 123,287
  images: 24.7 GB instead of 49.5 GB) at a relative rounding of 2⁻¹¹; the loader reads float32.
  ``features.json`` beside the arrays records the weights file and its sha256, the preprocessing, the torch
  version and the image count; a pass with other settings refuses to add to a cache it did not make.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from repro import results
from repro.data import DataError, sha256

CHECKPOINT = "vgg19-dcbb9e9d.pth"  # torchvision's VGG19_Weights.IMAGENET1K_V1
CHECKPOINT_URL = f"https://download.pytorch.org/models/{CHECKPOINT}"
CHECKPOINT_SHA256_PREFIX = re.search(r"-([0-9a-f]+)\.", CHECKPOINT).group(1)
# Configuration E through conv5_4: output channels of each 3 × 3 convolution, "M" a 2 × 2 max-pool.
CONFIGURATION_E = [64, 64, "M", 128, 128, "M", *[256] * 4, "M", *[512] * 4, "M", *[512] * 4]
RESIZE, CROP = 256, 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DTYPE = np.float16
PROVENANCE = "features.json"


class VGG19Conv54(nn.Sequential):
    """VGG-19 through conv5_4 and its ReLU: B × 3 × 224 × 224 normalised images -> B × 196 × 512.

    ``weights_file`` and ``weights_sha256`` say where the parameters came from (None: random initialisation).
    """

    def __init__(self):
        layers: list[nn.Module] = []
        channels = 3
        for item in CONFIGURATION_E:
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(channels, item, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                channels = item
        super().__init__(*layers)
        self.weights_file: Path | None = None
        self.weights_sha256: str | None = None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        grid = super().forward(images)  # B × 512 × 14 × 14
        return grid.flatten(2).transpose(1, 2)  # cell (row, column) is annotation vector 14 · row + column


def missing_weights_message(path: Path, reason: str) -> str:
    return (
        f"VGG-19 ImageNet weights not found: {path} ({reason}). Download {CHECKPOINT_URL} (torchvision's "
        f"VGG19_Weights.IMAGENET1K_V1, 548 MB) and put it in {path.parent}/ (torch's hub cache: "
        f"$TORCH_HOME/hub/checkpoints, by default ~/.cache/torch/hub/checkpoints), or name the file with "
        f"--weights FILE."
    )


def checkpoint_path(weights: str | Path | None = None) -> Path:
    """The verified checkpoint: ``weights`` when given, else torch's hub cache copy (downloaded if absent)."""
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise DataError(missing_weights_message(path, "--weights names no file"))
    else:
        path = Path(torch.hub.get_dir()) / "checkpoints" / CHECKPOINT
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            try:  # the hub checks the hash prefix before it moves the download into place
                torch.hub.download_url_to_file(CHECKPOINT_URL, str(path), CHECKPOINT_SHA256_PREFIX)
            except OSError as err:  # no network: urllib's URLError is an OSError
                raise DataError(missing_weights_message(path, f"the download failed: {err}")) from err
            except RuntimeError as err:
                raise DataError(
                    f"the download of {CHECKPOINT_URL} is corrupt ({err}); nothing was saved"
                ) from err
    digest = sha256(path)
    if not digest.startswith(CHECKPOINT_SHA256_PREFIX):
        raise DataError(
            f"{path} is not torchvision's {CHECKPOINT}: its sha256 {digest} does not begin with "
            f"{CHECKPOINT_SHA256_PREFIX}. Download {CHECKPOINT_URL} again."
        )
    return path


def pretrained_vgg19(weights: str | Path | None = None) -> VGG19Conv54:
    """VGG19Conv54 with torchvision's ImageNet parameters (the classifier's are not needed and not loaded)."""
    path = checkpoint_path(weights)
    state = torch.load(path, map_location="cpu", weights_only=True)
    encoder = VGG19Conv54()
    encoder.load_state_dict(
        {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
    )
    encoder.weights_file, encoder.weights_sha256 = path.resolve(), sha256(path)
    return encoder


def load_image(path: Path) -> torch.Tensor:
    """3 × 224 × 224: the checkpoint's evaluation transform (module docstring) of one image file."""
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
    except FileNotFoundError as err:
        raise DataError(
            f"image missing: {path} (data.images must hold every image the split lists name)"
        ) from err
    except (OSError, Image.DecompressionBombError) as err:
        raise DataError(f"cannot read the image {path}: {err}. Replace it with a good copy.") from err
    width, height = image.size
    # The shorter side becomes RESIZE and the longer int(RESIZE * longer / shorter), as torchvision's Resize
    # computes it, so that the crop sees the pixels the checkpoint's transform gives.
    longer = int(RESIZE * max(width, height) / min(width, height))
    size = (RESIZE, longer) if width <= height else (longer, RESIZE)
    image = image.resize(size, Image.Resampling.BILINEAR)
    left, top = round((image.width - CROP) / 2), round((image.height - CROP) / 2)
    image = image.crop((left, top, left + CROP, top + CROP))
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    return (pixels - mean) / std


class ImageFiles(torch.utils.data.Dataset):
    """(position, 3 × 224 × 224 image) of each name, read from ``folder``: DataLoader workers decode them."""

    def __init__(self, folder: Path, names: list[str]):
        self.folder, self.names = folder, names

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor]:
        return i, load_image(self.folder / self.names[i])


def settings(encoder: VGG19Conv54) -> dict[str, Any]:
    """What makes two passes' features comparable: the network, its weights, the preprocessing, the format."""
    return {
        "encoder": "VGG-19 (configuration E) through conv5_4 and its ReLU, before the last max-pool",
        "weights_sha256": encoder.weights_sha256,
        "preprocessing": {
            "resize_shorter_side": RESIZE,
            "interpolation": "PIL bilinear",
            "centre_crop": CROP,
            "colour": "RGB, scaled to [0, 1]",
            "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD),
        },
        "layout": "one <image>.npy per image: 196 x 512 (the 14 x 14 grid row-major, 512 channels)",
        "dtype": np.dtype(DTYPE).name,
    }


def write_array(path: Path, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, array)
    results.atomic_write_bytes(path, buffer.getvalue())


def cache_features(
    names: list[str],
    image_folder: Path,
    feature_folder: Path,
    encoder: VGG19Conv54,
    batch_size: int = 32,
    device: str = "cpu",
    workers: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Write ``feature_folder/<name>.npy`` for each name not cached yet; returns what ``features.json`` holds.

    ``progress(done, total)`` is called after each batch, over the names that were not cached.
    """
    wanted = settings(encoder)
    record_path = feature_folder / PROVENANCE
    if record_path.exists():
        made = results.read_json(record_path)["settings"]
        if made != wanted:
            raise DataError(
                f"{feature_folder} holds features made with other settings ({record_path}: {made}); this "
                f"pass would make {wanted}. Delete the folder, or set data.features to another one."
            )
    elif feature_folder.exists() and next(feature_folder.rglob("*.npy"), None) is not None:
        raise DataError(
            f"{feature_folder} holds .npy files but no {PROVENANCE}: they were not made by this command and "
            f"may differ from its features. Delete them, or set data.features to another folder."
        )
    todo = [name for name in names if not (feature_folder / f"{name}.npy").exists()]
    record = {
        "settings": wanted,
        "weights_file": encoder.weights_file,
        "weights_source": CHECKPOINT_URL
        if encoder.weights_sha256
        else "random initialisation (not ImageNet)",
        "torch": torch.__version__,
        "images_folder": image_folder.resolve(),
        "images": len(names),
        "encoded_by_this_pass": len(todo),
        "complete": False,
        "updated_at": results.now(),
    }
    results.write_json(record_path, record)  # before any array: a cache without it is not this command's
    encoder = encoder.eval().to(device)
    loader = torch.utils.data.DataLoader(
        ImageFiles(image_folder, todo), batch_size=batch_size, num_workers=workers
    )
    done = 0
    with torch.inference_mode():
        for positions, images in loader:
            features = encoder(images.to(device)).cpu().numpy().astype(DTYPE)
            for position, array in zip(positions.tolist(), features, strict=True):
                if not np.isfinite(array).all():
                    raise DataError(
                        f"{image_folder / todo[position]}: its features do not fit {DTYPE.__name__}"
                    )
                write_array(feature_folder / f"{todo[position]}.npy", array)
            done += len(positions)
            if progress is not None:
                progress(done, len(todo))
    record.update(complete=True, updated_at=results.now())
    results.write_json(record_path, record)
    return record
