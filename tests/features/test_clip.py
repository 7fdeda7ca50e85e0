"""ClipEmbedder on tiny SYNTHETIC weights: shapes, unit norm, determinism, batching."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from shared.features.clip import ClipEmbedder
from shared.config import Settings
from shared.errors import WeightsMissing


@pytest.fixture(scope="module")
def embedder(tiny_weights) -> ClipEmbedder:
    return ClipEmbedder.load(tiny_weights, Settings(torch_threads=1))


def _images(n: int) -> list[Image.Image]:
    rng = np.random.default_rng(7)
    return [Image.fromarray(rng.integers(0, 255, (20 + 3 * i, 30, 3), dtype=np.uint8)) for i in range(n)]


def test_shape_dtype_and_unit_norm(embedder):
    vectors = embedder.embed(_images(5))
    assert vectors.shape == (5, embedder.dim) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_deterministic_across_calls_and_loads(embedder, tiny_weights):
    images = _images(3)
    again = ClipEmbedder.load(tiny_weights, Settings(torch_threads=1))
    np.testing.assert_array_equal(embedder.embed(images), embedder.embed(images))
    np.testing.assert_allclose(embedder.embed(images), again.embed(images), atol=1e-6)


def test_batch_equals_one_by_one(embedder):
    images = _images(7)
    batched = embedder.embed(images, batch_size=3)
    single = np.concatenate([embedder.embed([img], batch_size=1) for img in images])
    np.testing.assert_allclose(batched, single, atol=1e-5)


def test_different_images_differ(embedder):
    vectors = embedder.embed(_images(2))
    assert not np.allclose(vectors[0], vectors[1])


def test_empty_list(embedder):
    assert embedder.embed([]).shape == (0, embedder.dim)


def test_non_rgb_input_is_accepted(embedder):
    grey = Image.new("L", (10, 10), 128)
    assert embedder.embed([grey]).shape == (1, embedder.dim)


def test_config_is_the_contract(embedder, tiny_weights):
    config = embedder.config
    assert set(config) == {"kind", "model", "pretrained", "weights_sha256", "synthetic", "dim"}
    assert config["kind"] == "clip" and config["synthetic"] is True and embedder.synthetic
    assert config["dim"] == 32
    assert ClipEmbedder.config_for(tiny_weights, Settings()) == config


def test_extract_is_embed_and_the_codec_round_trips(embedder):
    images = _images(3)
    vectors = embedder.extract(images)
    np.testing.assert_array_equal(vectors, embedder.embed(images))
    assert embedder.kind == "clip" and embedder.batchable is True
    decoded = [ClipEmbedder.decode(ClipEmbedder.encode(v)) for v in vectors]
    np.testing.assert_array_equal(ClipEmbedder.stack(decoded, embedder.config), vectors)
    assert ClipEmbedder.stack([], embedder.config).shape == (0, embedder.dim)


def test_preprocessing_comes_from_the_factory(embedder):
    # open_clip's own transform for the tiny config: resized to its 32px input.
    assert embedder.preprocess(Image.new("RGB", (64, 48))).shape == (3, 32, 32)


def test_only_the_image_tower_is_kept_and_it_embeds_as_the_whole_model(embedder, tiny_weights):
    import open_clip
    import torch

    from shared import weights

    info = weights.read_weights_info(tiny_weights)["clip"]
    whole, _, preprocess = open_clip.create_model_and_transforms(info["model"],
                                                                 pretrained=str(tiny_weights / info["file"]))
    images = _images(3)
    with torch.inference_mode():
        expected = whole.eval().encode_image(torch.stack([preprocess(img) for img in images]), normalize=True)
    np.testing.assert_allclose(embedder.embed(images), expected.numpy(), atol=1e-6)
    kept = {name for name, _ in embedder.image_tower.named_parameters()}
    assert kept == {name.removeprefix("visual.") for name, _ in whole.named_parameters() if name.startswith("visual.")}


def test_missing_weights(tmp_path):
    with pytest.raises(WeightsMissing, match="--synthetic"):
        ClipEmbedder.load(tmp_path, Settings())
