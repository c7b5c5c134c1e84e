import numpy as np
import pytest

from hypergen.encoder import MAX_DESCRIPTION_CHARS, TaskEncoder, check_description
from hypergen.errors import DescriptionError


@pytest.fixture(scope="module")
def encoder():
    return TaskEncoder()


def test_encode_is_normalised_and_batched(encoder):
    texts = ["Classify the sentiment of a review", "Translate English to French", "Add two numbers"]
    batch = encoder.encode(texts)
    assert batch.shape == (3, 384) and batch.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    single = encoder.encode(texts[1])
    assert single.shape == (384,)
    np.testing.assert_allclose(single, batch[1], atol=1e-5)


def test_one_pass_gives_sentence_transformers_numbers(encoder):
    texts = [
        "  padded with spaces \n",
        "UPPER case Text",
        "émoji 😀 and ünïcode, right-to-left עברית",
        "x",
        "describe the task " * 200,  # past the window: both cut it to the first 256 pieces
    ]
    reference = encoder.model.encode(texts, normalize_embeddings=True)
    encoder.model.train()  # left in training mode by someone: dropout must still be off
    np.testing.assert_allclose(encoder.encode(texts, truncate=True), reference, atol=1e-6)
    assert not encoder.model.training
    many = encoder.encode(texts, batch_size=2, truncate=True)  # the batched path
    np.testing.assert_allclose(many, reference, atol=1e-5)


def test_similar_descriptions_are_closer(encoder):
    a, b, c = encoder.encode(
        [
            "Decide whether a movie review is positive or negative",
            "Tell if the sentiment of this film review is good or bad",
            "Compute the sum of two integers",
        ]
    )
    assert a @ b > a @ c + 0.2


@pytest.mark.parametrize("bad", ["", "   \n\t", None, 42, b"bytes"])
def test_rejects_empty_or_non_text(encoder, bad):
    with pytest.raises(DescriptionError):
        encoder.encode(bad)
    with pytest.raises(DescriptionError, match="description 1"):
        encoder.encode(["fine", bad])


def test_long_text_is_an_error_unless_truncation_is_asked(encoder, caplog):
    long = "describe the task " * 200
    with pytest.raises(DescriptionError, match="too long for the encoder .*truncate=True"):
        encoder.encode(long)
    assert encoder.encode(long, truncate=True).shape == (384,)
    assert "truncating" in caplog.text
    with pytest.raises(DescriptionError, match="characters"):
        check_description("x" * (MAX_DESCRIPTION_CHARS + 1))


def test_bad_encoder_path(tmp_path):
    with pytest.raises(DescriptionError, match="not a sentence-transformers model folder"):
        TaskEncoder(tmp_path)
