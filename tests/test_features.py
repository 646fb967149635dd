"""Feature extractors: the committed digits classifier, the FID Inception with random weights."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from ddpmkit.data import DataConfig, load_dataset
from ddpmkit.evaluation.features import (DIGITS_CLASSIFIER_INFO, DIGITS_CLASSIFIER_WEIGHTS, FIDInceptionV3,
                              IdentityFeatures, InceptionFeatures, digits_floor, extract_features,
                              load_digit_classifier, load_inception)
from ddpmkit.evaluation.features.inception import prepare_images

torch.set_num_threads(1)

SMALL = 139  # the network is the same as at 299, 4.6x cheaper; its last blocks still see a 3x3 grid


# --- the digits classifier -------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits():
    return (load_digit_classifier(), load_dataset(DataConfig(name="digits"), "train"),
            load_dataset(DataConfig(name="digits"), "test"))


def test_committed_classifier_reaches_its_stated_test_accuracy(digits):
    extractor, _, test = digits
    info = json.loads(DIGITS_CLASSIFIER_INFO.read_text())
    assert DIGITS_CLASSIFIER_WEIGHTS.stat().st_size < 1_000_000
    assert info["test_count"] == len(test) == 450
    logits = extract_features(extractor, test.x).logits
    correct = int((logits.argmax(1) == test.y).sum())
    assert abs(correct - info["test_correct"]) <= 1  # one borderline image may flip across CPUs
    assert correct / len(test) >= 0.98


def test_classifier_features_shape_scale_and_batching(digits):
    extractor, train, _ = digits
    whole = extract_features(extractor, train.x, batch_size=2048)
    assert whole.features.shape == (1347, 64) and whole.logits.shape == (1347, 10)
    # the training script scales the feature layer so that mean |f|^2 / d = 1 on the train split
    assert float(whole.features.pow(2).sum(1).mean() / 64) == pytest.approx(1.0, rel=1e-4)
    pieces = extract_features(extractor, train.x, batch_size=97)
    torch.testing.assert_close(pieces.features, whole.features, rtol=1e-5, atol=1e-5)
    streamed = extract_features(extractor, iter(train.x.split(500)))
    torch.testing.assert_close(streamed.logits, whole.logits, rtol=1e-5, atol=1e-5)


def test_digits_floors_match_the_stated_ones(digits):
    extractor = digits[0]
    stated = json.loads(DIGITS_CLASSIFIER_INFO.read_text())["floors"]
    floors = digits_floor(extractor, seed=0)
    assert floors["fd"] == pytest.approx(stated["fd"], rel=1e-4)
    assert floors["kid"] == pytest.approx(stated["kid"], abs=1e-5)
    assert floors["precision"] == pytest.approx(stated["precision"], abs=1.5 / 450)
    assert floors["recall"] == pytest.approx(stated["recall"], abs=1.5 / 1347)
    assert floors["is"] == pytest.approx(stated["is"], rel=1e-3)
    # a floor is what real data gets: shuffled-pixel "digits" must score far worse
    _, train, test = digits
    g = torch.Generator().manual_seed(0)
    noise = test.x.flatten(1)[:, torch.randperm(64, generator=g)].reshape(-1, 1, 8, 8)
    from ddpmkit.evaluation.features import extractor_floor
    worse = extractor_floor(extractor, train.x, noise, kid_subsets=10)
    assert worse["fd"] > 10 * floors["fd"] and worse["kid"] > 0.1 and worse["precision"] < 0.5


def test_classifier_rejects_bad_input(digits):
    extractor = digits[0]
    with pytest.raises(ValueError, match="shape"):
        extractor(torch.zeros(2, 1, 28, 28))
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        extractor(torch.full((2, 1, 8, 8), 16.0))  # raw 0..16 codes


def test_identity_features_are_raw_coordinates():
    points = torch.randn(10, 2, generator=torch.Generator().manual_seed(0))
    result = extract_features(IdentityFeatures(2), points, batch_size=3)
    assert torch.equal(result.features, points) and result.logits is None


# --- Inception-v3 (FID) with random weights --------------------------------------------------

def random_inception(seed: int) -> FIDInceptionV3:
    """Random but informative weights: He-scaled convolutions and random BatchNorm statistics."""
    g = torch.Generator().manual_seed(seed)
    network = FIDInceptionV3()
    state = network.state_dict()
    for key, value in state.items():
        if key.endswith("conv.weight"):
            state[key] = torch.randn(value.shape, generator=g) * (2.0 / value[0].numel()) ** 0.5
        elif key.endswith(("running_mean", "bn.bias")):
            state[key] = 0.1 * torch.randn(value.shape, generator=g)
        elif key.endswith(("running_var", "bn.weight")):
            state[key] = 0.5 + torch.rand(value.shape, generator=g)
        elif key.startswith("fc."):
            state[key] = 0.01 * torch.randn(value.shape, generator=g)
    network.load_state_dict(state)
    return network.eval()


@pytest.fixture(scope="module")
def inception_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inception")
    network = random_inception(0)
    state = {k: v for k, v in network.state_dict().items() if not k.endswith("num_batches_tracked")}
    save_file(state, str(folder / "fid_inception.safetensors"))
    torch.save(network.state_dict(), folder / "pt_inception.pth")
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        expected = network.pool3(prepare_images(x, SMALL))
    return folder, state, x, expected


def test_inception_loads_safetensors_and_pth_with_the_expected_keys(inception_files):
    folder, _, x, expected = inception_files
    for name in ("fid_inception.safetensors", "pt_inception.pth"):
        extractor = load_inception(folder / name)
        extractor.size = SMALL
        features, logits = extractor(x)
        assert features.shape == (2, 2048) and logits.shape == (2, 1008)
        torch.testing.assert_close(features, expected, rtol=0, atol=0)
    # the comparison is not vacuous: other weights give other features, other inputs too
    other = InceptionFeatures(random_inception(1), size=SMALL)(x)[0]
    assert (other - expected).abs().max() > 1e-2
    assert (extractor(x.flip(-1))[0] - expected).abs().max() > 1e-3


def test_inception_is_deterministic_and_sees_gray_as_rgb(inception_files):
    folder, _, x, expected = inception_files
    extractor = InceptionFeatures(random_inception(0), size=SMALL)
    first, again = extractor(x)[0], extractor(x)[0]
    assert torch.equal(first, again)
    torch.testing.assert_close(extractor(x.repeat(1, 3, 1, 1))[0], first, rtol=0, atol=0)


def test_inception_without_fc_has_no_logits_and_bias_is_optional(inception_files):
    folder, state, x, _ = inception_files
    save_file({k: v for k, v in state.items() if not k.startswith("fc.")}, str(folder / "no_fc.safetensors"))
    extractor = load_inception(folder / "no_fc.safetensors")
    extractor.size = SMALL
    features, logits = extractor(x)
    assert logits is None
    with_fc = load_inception(folder / "fid_inception.safetensors", logits_bias=True)
    with_fc.size = SMALL
    fc = with_fc.network.fc
    torch.testing.assert_close(with_fc(x)[1], features @ fc.weight.T + fc.bias)


def test_inception_weight_errors_name_the_problem(inception_files, tmp_path):
    _, state, _, _ = inception_files
    broken = dict(state)
    del broken["Mixed_6b.branch7x7_2.conv.weight"]
    save_file(broken, str(tmp_path / "missing.safetensors"))
    with pytest.raises(ValueError, match=r"missing 1 key.*Mixed_6b\.branch7x7_2\.conv\.weight"):
        load_inception(tmp_path / "missing.safetensors")
    wrong = dict(state, **{"Conv2d_1a_3x3.conv.weight": torch.zeros(32, 1, 3, 3)})
    save_file(wrong, str(tmp_path / "shape.safetensors"))
    with pytest.raises(ValueError, match=r"Conv2d_1a_3x3\.conv\.weight has shape \(32, 1, 3, 3\)"):
        load_inception(tmp_path / "shape.safetensors")
    extra = dict(state, **{"AuxLogits.fc.weight": torch.zeros(3)})
    save_file(extra, str(tmp_path / "extra.safetensors"))
    with pytest.raises(ValueError, match="unexpected 1 key.*AuxLogits"):
        load_inception(tmp_path / "extra.safetensors")
    with pytest.raises(ValueError, match="not found"):
        load_inception(tmp_path / "absent.pth")


class NotATensor:
    """A class a plain unpickler would rebuild; weights_only loading must refuse it."""

    touched = False

    def __setstate__(self, state):  # would run on a plain unpickle
        NotATensor.touched = True


def test_pth_is_read_weights_only(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as handle:
        torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(1), "payload": NotATensor()}, handle)
    with pytest.raises(ValueError, match="not a plain tensor state dict"):
        load_inception(path)
    assert not NotATensor.touched


def test_prepare_images_resizes_bilinear_to_299_without_corner_alignment():
    ramp = torch.linspace(-1, 1, 8).repeat(8, 1)[None, None]  # columns -1 ... 1
    out = prepare_images(ramp)
    assert out.shape == (1, 3, 299, 299)
    # half-pixel centres: output column j samples input column (j + 0.5) * 8 / 299 - 0.5
    source = (torch.arange(299, dtype=torch.float64) + 0.5) * 8 / 299 - 0.5
    expected = -1 + 2 / 7 * source.clamp(0, 7)
    torch.testing.assert_close(out[0, 1, 100].double(), expected, rtol=0, atol=1e-6)
    big = torch.rand(1, 3, 299, 299) * 2 - 1
    assert torch.equal(prepare_images(big), big)
    torch.testing.assert_close(prepare_images(torch.full((1, 1, 8, 8), 1.01)), torch.ones(1, 3, 299, 299))  # clipped
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        prepare_images(torch.full((1, 3, 32, 32), 255.0))
    with pytest.raises(ValueError, match="shape"):
        prepare_images(torch.zeros(1, 2, 8, 8))


def test_inception_matches_pytorch_fid_golden_values(inception_files):
    """Numbers pytorch-fid 0.3.0's FID Inception gave for these random weights and inputs at 139x139.

    They pin the FID graph's details that random-weight shape tests cannot see: padding left out
    of the mixed blocks' average pools (with it, the sums become 1400.0 and 1491.8) and the max
    pool in Mixed_7c (with an average pool, 1466.3 and 1569.7).
    """
    _, _, _, features = inception_files
    torch.testing.assert_close(features.sum(1), torch.tensor([1530.6871, 1643.8181]), rtol=1e-4, atol=0)
    projection = torch.randn(2048, 3, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(features @ projection, torch.tensor(
        [[68.244339, 14.021859, -33.154209], [78.916702, 13.741232, -28.749271]]), rtol=1e-4, atol=1e-3)


def test_inception_matches_pytorch_fid_when_installed(inception_files, monkeypatch):
    """Cross-check with pytorch-fid's FID Inception on the same random weights (skipped without it)."""
    pfi = pytest.importorskip("pytorch_fid.inception")
    folder, state, x, _ = inception_files
    monkeypatch.setattr(pfi, "load_state_dict_from_url", lambda *a, **k: dict(state))  # no download
    theirs = pfi.InceptionV3([3], resize_input=True, normalize_input=True).eval()
    with torch.no_grad():
        reference = theirs((x.repeat(1, 3, 1, 1) + 1) / 2)[0].flatten(1)  # they take [0, 1]
    ours = load_inception(folder / "fid_inception.safetensors")(x)[0]
    torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-4)
